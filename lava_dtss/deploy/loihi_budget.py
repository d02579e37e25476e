"""Chip budget of the standard-process (Loihi 2) build: cores and chips with
convolution weights shared and unshared, host traffic of the attention, and
estimated time per step and energy per inference.

Every figure comes from ``lava_dtss.loihi2`` (its sources are cited there and in
``docs/loihi.md``, "Chip budget"). Per part of the build (a layer, its relay
gate, a skip relay chain, the timer; :func:`loihi_build.resources`) the cores are
the largest of three bounds:

- neurons: ``ceil(neurons / NEURONS_PER_CORE)``;
- synaptic memory: ``ceil(weights / SYNAPSES_PER_CORE)`` with 8-bit weights,
  ``weights`` = one per connection (unshared) or, for a convolution, each
  kernel stored once (shared; the kernel slice of the output channels a core
  holds), plus one inhibitory weight per neuron of an inhibited layer;
- input axons: ``ceil(input axons / AXONS_PER_CORE)``.

Time per step: the slowest part's cores, each doing its share of synaptic
operations and neuron updates serially, plus a barrier. Energy per inference:
``P`` steps of every chip neuron updated and every synaptic operation, at
``ASSUMED_FIRING_RATE`` spikes per neuron and step (the input sends every pixel
every step). Both are estimates from Loihi 1 measurements; the host attention's
round trip is not in the time (it dominates a chip run; docs/loihi.md).
"""
from __future__ import annotations

import math

import numpy as np

from ..loihi2 import (ASSUMED_FIRING_RATE, AXONS_PER_CORE, CORES_PER_CHIP, E_NEURON_PJ, E_SYNOP_PJ,
                      NEURONS_PER_CORE, SYNAPSES_PER_CORE, T_BARRIER_NS, T_NEURON_NS, T_SYNOP_NS)
from .loihi_build import LoihiPlan, resources


def _cores(neurons: int, weights: int, axons: int) -> int:
    return max(math.ceil(neurons / NEURONS_PER_CORE), math.ceil(weights / SYNAPSES_PER_CORE),
               math.ceil(axons / AXONS_PER_CORE), 1)


def _synops(p: LoihiPlan, rate: float) -> dict:
    """Synaptic operations per step by part name, at ``rate`` spikes per neuron
    and step (the graded input: every pixel, every step)."""
    ops = {}
    for st in p.stages.values():
        if st.type in ('input', 'attention'):
            continue
        n = int(np.prod(st.shape))
        fan_in = int(np.prod(np.asarray(p.spec.layers[st.index].params['weight']).shape[1:]))
        ops[st.name] = sum((1.0 if e.src == 0 else rate) * n * fan_in for e in st.edges)
        if st.gate_mode == 'relay':
            ops[f'{st.name}.gate'] = rate * n + n * (p.period - st.active_steps) / p.period
        elif st.gate_mode == 'inhibit':
            ops[st.name] += n * (p.period - st.active_steps) / p.period
    for r, d in p.relays.items():
        ops[f'{p.stages[r].name}.relay'] = rate * int(np.prod(p.stages[r].shape)) * d
    return ops


def budget(p: LoihiPlan, rate: float = ASSUMED_FIRING_RATE) -> dict:
    """Cores and chips (unshared and shared convolutions), chip neurons, relay
    gates, host bits per step of the attention, estimated seconds per step and
    joules per inference (:mod:`module docstring <lava_dtss.deploy.loihi_budget>`)."""
    rows = resources(p)
    ops = _synops(p, rate)
    stages = {st.name: st for st in p.stages.values()}
    unshared = shared = neurons = 0
    slowest = 0.0
    for r in rows:
        if r['where'] != 'chip':
            continue
        st = stages.get(r['name'])
        inhibit = r['neurons'] if st is not None and st.gate_mode == 'inhibit' else 0
        c_un = _cores(r['neurons'], r['synapses'], r['axons'])
        c_sh = _cores(r['neurons'], r['weights'] + inhibit, r['axons'])
        unshared, shared, neurons = unshared + c_un, shared + c_sh, neurons + r['neurons']
        t = (ops.get(r['name'], 0.0) * T_SYNOP_NS + r['neurons'] * T_NEURON_NS) / c_sh
        slowest = max(slowest, t)
    attention = sum(r['traffic'] for r in rows if r['where'] == 'host' and r['name'] not in ('input', 'readout'))
    energy_pj = p.period * (sum(ops.values()) * E_SYNOP_PJ + neurons * E_NEURON_PJ)
    return {'neurons': neurons, 'relay_gates': sum(st.gate_mode == 'relay' for st in p.gated),
            'gates': len(p.gated), 'cores_unshared': unshared, 'chips_unshared': math.ceil(unshared / CORES_PER_CHIP),
            'cores_shared': shared, 'chips_shared': math.ceil(shared / CORES_PER_CHIP),
            'attention_bits_per_step': attention, 'synops_per_step': sum(ops.values()),
            'step_s': (slowest + T_BARRIER_NS) * 1e-9, 'energy_j': energy_pj * 1e-12,
            'period': p.period, 'depth': p.max_offset}
