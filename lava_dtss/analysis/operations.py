"""Event-driven operation counts of a spiking ViT, computed on the training
side exactly as the Lava runtime's processes count them (``lava_processes``):

* synaptic operations of a conv/dense layer: for every step ``t`` the layer is
  active, every non-zero input (spike, graded residual sum or pixel) times the
  number of output neurons it reaches (its fan-out);
* attention ``q (k^T v)``: per head and token, ``n_k * n_v`` products for
  ``k^T v`` plus ``n_q * d`` for ``q (.)`` (``n_x``: non-zero entries);
* neuron updates: neurons x active steps.

A layer runs ``T_l`` steps when gated (its DTSS active steps) or ``T_max``
steps when not. Inputs are ``[N, C, H, W, T]`` (time last).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from ..deploy.fixed_point import conv_fanout
from ..model.blocks import SpikingAttention, SpikingConv


@functools.lru_cache(maxsize=64)
def _fanout(h, w, k, stride, padding, cout):
    return torch.from_numpy(conv_fanout(h, w, k, stride, padding, cout))


def conv_synops(block: SpikingConv, x: torch.Tensor, steps: int) -> int:
    """Synaptic operations of ``block`` on input ``x [N, C, H, W, T]`` in steps ``< steps``."""
    _, _, h, w, _ = x.shape
    events = (x[..., :steps] != 0).sum(dim=(0, 1, 4)).double()            # [H, W]
    fan = _fanout(h, w, block.kernel_size, block.stride, block.padding, block.out_channels)
    return int(round(float((events * fan).sum())))


def attention_synops(block: SpikingAttention, q, k, v, steps: int) -> int:
    """Operations of ``q (k^T v)`` per head in steps ``< steps`` (inputs ``[N, C, H, W, T]``)."""
    n, c, h, w, _ = q.shape
    d = c // block.heads

    def events(x):  # non-zero entries per head, token and step: [N, heads, L, steps]
        return (x[..., :steps] != 0).reshape(n, block.heads, d, h * w, -1).sum(2).double()
    nq, nk, nv = events(q), events(k), events(v)
    return int(round(float((nk * nv).sum() + nq.sum() * d)))


class OperationCounter:
    """Context manager counting every gated layer's synaptic operations and
    neuron updates during the forward passes it encloses.

    ``gating=True`` counts each layer's active steps only (what a gated Lava run
    executes); ``False`` counts all ``T_max`` steps. After the block,
    ``synops[name]`` and ``neuron_updates[name]`` are totals over all samples.
    """

    def __init__(self, model, gating: bool = True):
        self.model, self.gating = model, gating
        self.synops, self.neuron_updates, self.samples = {}, {}, 0
        self._hooks = []

    def _hook(self, name):
        def hook(module, inputs, output):
            steps = module.gate.active_steps if self.gating else output.shape[-1]
            if isinstance(module, SpikingAttention):
                ops = attention_synops(module, *inputs, steps)
            else:
                ops = conv_synops(module, inputs[0], steps)
            self.synops[name] = self.synops.get(name, 0) + ops
            updates = output[..., 0].numel() * steps
            self.neuron_updates[name] = self.neuron_updates.get(name, 0) + updates
            if name == self._first:
                self.samples += output.shape[0]
        return hook

    def __enter__(self):
        layers = self.model.gated_layers()
        self._first = layers[0][0]
        self._hooks = [m.register_forward_hook(self._hook(n)) for n, m in layers]
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()
        self._hooks = []
        return False
