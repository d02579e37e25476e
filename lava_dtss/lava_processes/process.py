"""Lava processes of a DTSS spiking ViT (definitions only; no side effects:
Lava's compiler imports every file in this folder).

Time: every process runs in windows of ``t_max`` Lava steps per sample
(global step ``g`` = 1, 2, ...; window step ``t = (g - 1) % t_max``) and resets
its neuron state at ``t = 0``. Layers are layer-synchronous: step ``t`` of a
layer consumes step ``t`` of its inputs (SLAYER ``delay_shift=False``).
Values on ports are integers (spikes 0/1, graded residual sums, 8-bit pixels)
carried as float64, which is exact in these ranges.
"""
import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var


class FrameInput(AbstractProcess):
    """Direct-encoded input: sends ``frames[s, ..., t]`` at window step ``t``
    of sample ``s``; zeros once the samples are exhausted.

    frames: ``[S, C, H, W, T]`` integers.
    """

    def __init__(self, *, frames: np.ndarray, name: str = 'input'):
        super().__init__(name=name, t_max=int(frames.shape[-1]))
        self.frames = Var(shape=frames.shape, init=frames)
        self.s_out = OutPort(shape=frames.shape[1:-1])


class _GatedNeurons(AbstractProcess):
    """Common part: CUBA-LIF (Loihi fixed point), DTSS gate, counters."""

    def _common(self, out_shape, num_steps):
        self.s_out = OutPort(shape=out_shape)
        self.u = Var(shape=out_shape, init=0)
        self.v = Var(shape=out_shape, init=0)
        self.synops = Var(shape=(1,), init=0)          # synaptic operations executed
        self.neuron_updates = Var(shape=(1,), init=0)  # neuron updates executed
        self.fingerprint = Var(shape=(num_steps, 2), init=0)  # [spike count, checksum] per step


class GatedLayer(_GatedNeurons):
    """Fused synapse + CUBA-LIF + DTSS gate: ``conv`` (weight ``[Co, Ci, k, k]``,
    stride, padding; input ``(Ci, H, W)``) or ``dense`` (weight ``[No, Ni]``;
    input of any shape with ``Ni`` values, flattened C-major).

    After window step ``active_steps`` the layer neither accumulates input nor
    updates neurons and sends zeros (``gating=True``); with ``gating=False``
    it computes every step and zeroes the output after ``active_steps`` (the
    DTSS mask), so both give the same spikes.
    """

    def __init__(self, *, kind: str, in_shape: tuple, out_shape: tuple, weight: np.ndarray,
                 bias: np.ndarray, neuron: dict, t_max: int, active_steps: int,
                 gating: bool, num_steps: int, stride: int = 1, padding: int = 0,
                 name: str = 'layer'):
        super().__init__(name=name, kind=kind, stride=int(stride), padding=int(padding),
                         vth=int(neuron['vThMant']), du=int(neuron['iDecay']),
                         dv=int(neuron['vDecay']), t_max=int(t_max),
                         active_steps=int(active_steps), gating=bool(gating))
        self.a_in = InPort(shape=in_shape)
        self.weight = Var(shape=weight.shape, init=weight)
        self.bias = Var(shape=bias.shape, init=bias)
        self._common(out_shape, num_steps)


class GatedAttention(_GatedNeurons):
    """Spiking self-attention core: ``LIF(weight * q (k^T v))`` per head on
    ``(C, H, W)`` spikes (tokens ``H*W``, ``C/heads`` channels per head), then
    the DTSS gate."""

    def __init__(self, *, shape: tuple, heads: int, weight: int, neuron: dict,
                 t_max: int, active_steps: int, gating: bool, num_steps: int,
                 name: str = 'attention'):
        super().__init__(name=name, heads=int(heads), weight=int(weight),
                         vth=int(neuron['vThMant']), du=int(neuron['iDecay']),
                         dv=int(neuron['vDecay']), t_max=int(t_max),
                         active_steps=int(active_steps), gating=bool(gating))
        self.q_in = InPort(shape=shape)
        self.k_in = InPort(shape=shape)
        self.v_in = InPort(shape=shape)
        self._common(shape, num_steps)


class Readout(AbstractProcess):
    """Class readout: per sample window, ``logits = weight @ sum_{t, H, W} x + bias``
    (integers) for input ``x`` of shape ``(C, H, W)`` or ``(C,)``."""

    def __init__(self, *, in_shape: tuple, weight: np.ndarray, bias: np.ndarray,
                 t_max: int, num_samples: int, name: str = 'readout'):
        super().__init__(name=name, t_max=int(t_max))
        self.a_in = InPort(shape=in_shape)
        self.weight = Var(shape=weight.shape, init=weight)
        self.bias = Var(shape=bias.shape, init=bias)
        self.acc = Var(shape=(in_shape[0],), init=0)
        self.logits = Var(shape=(num_samples, weight.shape[0]), init=0)
