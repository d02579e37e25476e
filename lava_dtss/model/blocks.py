"""SLAYER-style spiking blocks with a DTSS gate.

Every block owns its synapse (``lava.lib.dl.slayer.synapse``), an optional
BatchNorm, its CUBA-LIF neuron and its DTSS gate, and knows how to turn itself
into hardware integers (``hardware_params``) and back (``load_hardware``),
like ``slayer.block`` blocks own their HDF5 export.

Layout: ``[N, C, H, W, T]``, time last. A token-wise linear layer of the ViT is
a 1x1 convolution over the ``H x W`` token grid (weights shared over tokens, the
way Loihi maps it).

Units: SLAYER units; the hardware (Loihi 2, Lava fixed point) integer of a
weight, bias or threshold is ``64 x`` its SLAYER value (``WEIGHT_SCALE``; this
and every other limit the blocks scale to: ``lava_dtss.loihi2``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from lava.lib.dl import slayer

from ..loihi2 import (MAX_FILE_BIAS, MAX_UV, MAX_VTH, MAX_WEIGHT, WEIGHT_SCALE, quantize_bias, state_bounds,
                      worst_input)
from .dtss import DTSSGate
from .neuron import AnalogActivation, FastCubaNeuron


NEURON_IMPLS = ('fast', 'stock', 'ann')


def make_neuron(neuron_params: dict, impl: str = 'fast'):
    """CUBA-LIF neuron: ``'fast'`` (lava_dtss fused path) or ``'stock'``
    (``slayer.neuron.cuba.Neuron``, the neuron of ``slayer.block.cuba``); or
    ``'ann'``, the real-valued activation of the ANN twin (``AnalogActivation``)."""
    if impl == 'fast':
        return FastCubaNeuron(**neuron_params)
    if impl == 'stock':
        return slayer.neuron.cuba.Neuron(**neuron_params)
    if impl == 'ann':
        return AnalogActivation(neuron_params['threshold'])
    raise ValueError(f"unknown neuron implementation {impl!r}; expected one of {NEURON_IMPLS}")


class SpikingConv(torch.nn.Module):
    """Conv (or token-wise linear, ``kernel=1``) -> BatchNorm -> LIF -> DTSS gate.

    Input ``[N, C_in, H, W, T]``; output spikes ``[N, C_out, H', W', T]``.
    """

    kind = 'conv'

    def __init__(self, neuron_params: dict, in_channels: int, out_channels: int,
                 kernel_size: int = 3, stride: int = 1, *, category: str,
                 t_max: int, dtss: bool = True, norm: bool = True,
                 neuron_impl: str = 'fast'):
        super().__init__()
        self.neuron_params = dict(neuron_params)
        self.synapse = slayer.synapse.Conv(
            in_channels, out_channels, kernel_size, stride=stride,
            padding=kernel_size // 2, weight_scale=1, weight_norm=False)
        torch.nn.init.kaiming_uniform_(self.synapse.weight, a=math.sqrt(5))
        self.norm = torch.nn.BatchNorm3d(out_channels) if norm else None
        self.neuron = make_neuron(self.neuron_params, neuron_impl)
        self.gate = DTSSGate(t_max, category, enabled=dtss)
        self.register_buffer('bias', None)   # set by load_hardware
        self.last_shape = None               # output shape of the last forward

    @property
    def in_channels(self):
        return self.synapse.in_channels

    @property
    def out_channels(self):
        return self.synapse.out_channels

    @property
    def kernel_size(self):
        return self.synapse.kernel_size[0]

    @property
    def stride(self):
        return self.synapse.stride[0]

    @property
    def padding(self):
        return self.synapse.padding[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.synaptic_current(x)
        if self.bias is not None:
            s = self.neuron(z, bias=self.bias.view(1, -1, 1, 1))
        else:
            s = self.neuron(z)
        self.last_shape = tuple(s.shape[1:-1])
        return self.gate(s)

    def synaptic_current(self, x: torch.Tensor) -> torch.Tensor:
        """Convolution and BatchNorm of ``x [N, C_in, H, W, T]`` -> ``[N, C_out, H', W', T]``.

        The same arithmetic as ``slayer.synapse.Conv`` (a Conv3d with a kernel one step
        wide in time) followed by ``BatchNorm3d``, computed as a 2-D convolution over
        the time steps folded into the batch (several times faster on CPU). An input
        that is constant in time (stride 0 on the time axis: the direct-encoded image)
        is convolved once and repeated. Returns a permuted view (time-major memory)."""
        n, c, h, w, t = x.shape
        weight = self.synapse.weight[..., 0]
        if t > 1 and x.stride(-1) == 0:
            z = F.conv2d(x[..., 0], weight, None, self.stride, self.padding)
            z = z.unsqueeze(1).expand(n, t, *z.shape[1:]).reshape(n * t, *z.shape[1:])
        else:
            z = F.conv2d(x.permute(0, 4, 1, 2, 3).reshape(n * t, c, h, w), weight, None,
                         self.stride, self.padding)
        if self.norm is not None:  # BatchNorm3d over (N*T, H, W): the statistics of (N, H, W, T)
            z = self.norm(z.unsqueeze(-1)).squeeze(-1)
        return z.view(n, t, *z.shape[1:]).permute(0, 2, 3, 4, 1)

    def flops_per_step(self) -> int:
        """Dense synaptic operations of one time step (output neurons x fan-in)."""
        c, h, w = self.last_shape
        return int(c * h * w * self.in_channels * self.kernel_size ** 2)

    def folded(self, input_scale: float = 1.0):
        """BatchNorm folded into ``(weight [Co, Ci, k, k], bias [Co])`` (float64,
        SLAYER units), for an input that is ``input_scale`` times the trained one."""
        w = self.synapse.weight.detach().double()[..., 0] / input_scale
        b = torch.zeros(w.shape[0], dtype=torch.float64)
        if self.norm is not None:
            n = self.norm
            scale = n.weight.detach().double() / torch.sqrt(n.running_var.double() + n.eps)
            w = w * scale.view(-1, 1, 1, 1)
            b = n.bias.detach().double() - n.running_mean.double() * scale
        return w, b

    def hardware_params(self, input_scale: float = 1.0, input_max: float = None) -> dict:
        """Integers for the hardware: BatchNorm folded, then one positive scale
        ``c`` per layer applied to weights, bias and threshold (spikes unchanged)
        so that weights are 8-bit signed integers (|w| <= 127), ``vThMant`` 17 bits,
        the bias a 13-bit mantissa at ``bias_exp`` 6 or 7 (``loihi2.quantize_bias``: a
        layer whose bias would bind, typically the first, whose weights ``inputScale``
        divides, gets one more bit of bias range and so more of its 8 weight bits), and
        the worst-case current stays inside Loihi 2's 24 bits (``loihi2.state_bounds``)
        for inputs up to ``input_max`` (integers: pixels up to ``inputScale``, or the
        number of spiking layers summed into the input; default ``input_scale``), so
        the chip never wraps a current that training does not."""
        w, b = self.folded(input_scale)
        theta = float(self.neuron.threshold)
        wmax = float(w.abs().max()) or 1.0
        c = min(MAX_WEIGHT / (WEIGHT_SCALE * wmax), MAX_VTH / (WEIGHT_SCALE * theta))
        bmax = float(b.abs().max())
        if bmax > 0:
            c = min(c, MAX_FILE_BIAS / (WEIGHT_SCALE * bmax))
        input_max = float(input_scale if input_max is None else input_max)
        i_decay, v_decay = int(self.neuron.cx_current_decay), int(self.neuron.cx_voltage_decay)
        while True:     # at most a few rounds: rounding moves the bound by < fan-in / 2
            weight = torch.round(w * WEIGHT_SCALE * c).to(torch.int64).numpy()
            bounds = state_bounds(worst_input(weight, input_max), 0.0, i_decay, v_decay)
            if bounds is None or bounds[0] < MAX_UV:
                break
            c *= 0.999 * MAX_UV / bounds[0]
        return {
            'weight': weight,
            'bias': quantize_bias(b * WEIGHT_SCALE * c),
            'vThMant': int(round(theta * WEIGHT_SCALE * c)),
            'iDecay': i_decay,
            'vDecay': v_decay,
            'activeSteps': self.gate.active_steps,
        }

    def load_hardware(self, hw: dict):
        """Switch to exact fixed-point inference with the integers of
        ``hardware_params`` (BatchNorm removed; call ``.double()`` after)."""
        w = torch.as_tensor(np.asarray(hw['weight']), dtype=torch.float64)
        if tuple(w.shape) != tuple(self.synapse.weight.shape[:-1]):
            raise ValueError(f'weight shape {tuple(w.shape)} does not match '
                             f'{tuple(self.synapse.weight.shape[:-1])}')
        self.synapse.weight.data = (w / WEIGHT_SCALE).unsqueeze(-1).to(self.synapse.weight)
        self.bias = torch.as_tensor(np.asarray(hw['bias']), dtype=torch.float64) / WEIGHT_SCALE
        self.norm = None
        _load_neuron_hw(self.neuron, hw)
        self.gate.frozen_steps.fill_(int(hw['activeSteps']))


def _load_neuron_hw(neuron, hw):
    neuron._threshold = int(hw['vThMant']) / WEIGHT_SCALE
    neuron.current_decay.data.fill_(float(hw['iDecay']))
    neuron.voltage_decay.data.fill_(float(hw['vDecay']))


def attention_counts(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     heads: int) -> torch.Tensor:
    """Spikformer's attention without softmax, ``(q k^T) v`` per head and time
    step, computed as ``q (k^T v)`` (exact: integer counts).

    ``q, k, v``: ``[N, C, H, W, T]`` spikes; returns ``[N, C, H, W, T]``.
    """
    n, c, h, w, t = q.shape
    d = c // heads
    qh, kh, vh = (x.reshape(n, heads, d, h * w, t) for x in (q, k, v))
    kv = torch.einsum('nhelt,nhdlt->nhedt', kh, vh)       # [N, h, d, d, T]
    y = torch.einsum('nhelt,nhedt->nhdlt', qh, kv)        # [N, h, d, L, T]
    return y.reshape(n, c, h, w, t)


class SpikingAttention(torch.nn.Module):
    """Spiking self-attention core: ``LIF(scale * q (k^T v))`` -> DTSS gate.

    Inputs: q, k, v spikes ``[N, C, H, W, T]``; output spikes, same shape.
    ``scale`` (0.125) is the synaptic weight of every attention count;
    Spikformer's attention LIF threshold is 0.5.
    """

    kind = 'attention'

    def __init__(self, neuron_params: dict, channels: int, heads: int,
                 scale: float = 0.125, *, t_max: int, dtss: bool = True,
                 neuron_impl: str = 'fast'):
        super().__init__()
        if channels % heads:
            raise ValueError(f'channels ({channels}) must be divisible by heads ({heads})')
        self.neuron_params = dict(neuron_params)
        self.channels, self.heads, self.scale = channels, heads, float(scale)
        self.neuron = make_neuron(self.neuron_params, neuron_impl)
        self.gate = DTSSGate(t_max, 'attn', enabled=dtss)
        self.last_shape = None

    def forward(self, q, k, v):
        y = self.scale * attention_counts(q, k, v, self.heads)
        s = self.neuron(y)
        self.last_shape = tuple(s.shape[1:-1])
        return self.gate(s)

    def flops_per_step(self) -> int:
        """Dense operations of ``q (k^T v)`` per step: ``2 L d^2`` per head."""
        c, h, w = self.last_shape
        d = c // self.heads
        return int(2 * h * w * d * d * self.heads)

    def hardware_params(self, input_scale: float = 1.0) -> dict:
        weight = self.scale * WEIGHT_SCALE
        if weight != int(weight):
            raise ValueError(f'attention scale {self.scale} is not a multiple of 1/64')
        return {
            'weight': int(weight),
            'vThMant': int(round(float(self.neuron.threshold) * WEIGHT_SCALE)),
            'iDecay': int(self.neuron.cx_current_decay),
            'vDecay': int(self.neuron.cx_voltage_decay),
            'activeSteps': self.gate.active_steps,
            'heads': self.heads,
        }

    def load_hardware(self, hw: dict):
        self.scale = int(hw['weight']) / WEIGHT_SCALE
        self.heads = int(hw['heads'])
        _load_neuron_hw(self.neuron, hw)
        self.gate.frozen_steps.fill_(int(hw['activeSteps']))
