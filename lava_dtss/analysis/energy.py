"""Energy model: compute and memory energy of a spiking ViT from counted
operations, and of its ANN twin from dense multiply-accumulates.

Units: operations and accesses are counts per image; energies are picojoules
(pJ) per image. Figures are 45 nm CMOS (Horowitz, "Computing's energy problem
(and what we can do about it)", ISSCC 2014), the convention of SNN papers; every
figure is a field of ``EnergyModel`` that a user can change.

Compute
    SNN: the first layer sees the direct-encoded (analog) image and costs a
    multiply-accumulate (MAC) per synaptic operation; every later layer costs an
    accumulate (AC) per synaptic operation, event-driven (a zero input costs
    nothing), as the Lava runtime and ``operations.OperationCounter`` count them.
    ANN: one MAC per dense synaptic connection.
Memory (SRAM)
    A weight read per synaptic operation (SNN) or MAC (ANN), ``weight_bits``
    each; per neuron update, the SNN reads and writes its state (current ``u`` and
    voltage ``v``); the ANN writes each activation once and reads it once. A
    skipped time step saves its state traffic, which is why DTSS saves memory
    energy even where the synaptic input is already zero.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class EnergyModel:
    e_mac_pj: float = 4.6        # 32-bit float multiply (3.7) + add (0.9)
    e_ac_pj: float = 0.9         # 32-bit float add
    e_sram_64b_pj: float = 20.0  # read of 64 bits from a 32 KB SRAM (write taken equal)
    weight_bits: int = 32        # bits per weight read (the float convention; 8 on Loihi)
    state_bits: int = 32         # bits per state variable or activation
    snn_state_vars: int = 2      # u and v, each read and written per neuron update
    ann_state_vars: int = 1      # the activation, written and read once

    def sram_pj(self, bits: float) -> float:
        return self.e_sram_64b_pj * bits / 64.0

    def to_dict(self):
        return asdict(self)


def _total(per_layer: dict) -> dict:
    keys = ('compute_pj', 'memory_pj', 'total_pj')
    return {k: sum(e[k] for e in per_layer.values()) for k in keys}


def snn_energy(synops: dict, neuron_updates: dict, first_layer: str,
               model: EnergyModel = EnergyModel()) -> dict:
    """``{'layers': {name: {compute_pj, memory_pj, total_pj}}, 'total': {...}}`` of
    a spiking network from per-image synaptic operations and neuron updates."""
    layers = {}
    for name, ops in synops.items():
        e_op = model.e_mac_pj if name == first_layer else model.e_ac_pj
        compute = ops * e_op
        memory = (ops * model.sram_pj(model.weight_bits)
                  + neuron_updates[name] * 2 * model.snn_state_vars * model.sram_pj(model.state_bits))
        layers[name] = {'compute_pj': compute, 'memory_pj': memory, 'total_pj': compute + memory}
    return {'layers': layers, 'total': _total(layers)}


def ann_energy(macs: dict, neurons: dict, model: EnergyModel = EnergyModel()) -> dict:
    """The same for the ANN twin from per-image dense MACs and neurons per layer."""
    layers = {}
    for name, n_mac in macs.items():
        compute = n_mac * model.e_mac_pj
        memory = (n_mac * model.sram_pj(model.weight_bits)
                  + neurons[name] * 2 * model.ann_state_vars * model.sram_pj(model.state_bits))
        layers[name] = {'compute_pj': compute, 'memory_pj': memory, 'total_pj': compute + memory}
    return {'layers': layers, 'total': _total(layers)}
