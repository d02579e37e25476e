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

from ..fixed_point import conv_fanout
from ..model.blocks import SpikingAttention, SpikingConv


@functools.lru_cache(maxsize=64)
def _fanout(h, w, k, stride, padding, cout):
    return torch.from_numpy(conv_fanout(h, w, k, stride, padding, cout))


def _until(x: torch.Tensor, steps: int, limit=None) -> torch.Tensor:
    """Non-zero entries of ``x [N, ..., T]`` in steps ``< steps`` and, with
    ``limit [N]`` (steps each sample runs, early exit), ``< limit[n]``."""
    nz = x[..., :steps] != 0
    if limit is not None:
        t = torch.arange(nz.shape[-1])
        nz = nz & (t < torch.as_tensor(limit).reshape((-1,) + (1,) * (nz.dim() - 1)))
    return nz


def conv_synops(block: SpikingConv, x: torch.Tensor, steps: int, limit=None) -> int:
    """Synaptic operations of ``block`` on input ``x [N, C, H, W, T]`` in steps
    ``< steps`` (and ``< limit[n]`` for sample ``n``, when given)."""
    _, _, h, w, _ = x.shape
    events = _until(x, steps, limit).sum(dim=(0, 1, 4)).double()          # [H, W]
    fan = _fanout(h, w, block.kernel_size, block.stride, block.padding, block.out_channels)
    return int(round(float((events * fan).sum())))


def attention_synops(block: SpikingAttention, q, k, v, steps: int, limit=None) -> int:
    """Operations of ``q (k^T v)`` per head in steps ``< steps`` (and ``< limit[n]``;
    inputs ``[N, C, H, W, T]``)."""
    n, c, h, w, _ = q.shape
    d = c // block.heads

    def events(x):  # non-zero entries per head, token and step: [N, heads, L, steps]
        return _until(x, steps, limit).reshape(n, block.heads, d, h * w, -1).sum(2).double()
    nq, nk, nv = events(q), events(k), events(v)
    return int(round(float((nk * nv).sum() + nq.sum() * d)))


class OperationCounter:
    """Context manager counting every gated layer's synaptic operations and
    neuron updates during the forward passes it encloses.

    ``gating=True`` counts each layer's active steps only (what a gated Lava run
    executes); ``False`` counts all ``T_max`` steps. After the block,
    ``synops[name]`` and ``neuron_updates[name]`` are totals over all samples.
    ``sample_steps`` (set before each forward pass, early exit): int tensor
    ``[N]`` of the steps each sample of the batch runs; steps after are not counted.
    """

    def __init__(self, model, gating: bool = True):
        self.model, self.gating = model, gating
        self.synops, self.neuron_updates, self.samples = {}, {}, 0
        self.sample_steps = None
        self._hooks = []

    def _hook(self, name):
        def hook(module, inputs, output):
            steps = module.gate.active_steps if self.gating else output.shape[-1]
            limit = self.sample_steps
            if isinstance(module, SpikingAttention):
                ops = attention_synops(module, *inputs, steps, limit)
            else:
                ops = conv_synops(module, inputs[0], steps, limit)
            self.synops[name] = self.synops.get(name, 0) + ops
            if limit is None:
                updates = output[..., 0].numel() * steps
            else:
                per_sample = output[0, ..., 0].numel()
                updates = per_sample * int(torch.clamp(torch.as_tensor(limit), max=steps).sum())
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
