"""Spikformer-style spiking ViT built from DTSS-gated SLAYER blocks
(architectures by name: ``presets.py``).

Data flow (tensors ``[N, C, H, W, T]``, time last):
image ``[N, C, H, W]`` -> direct encoding (repeated over T) -> SPS stem
(conv+LIF stages, stride-2 downsampling, relative position embedding conv+LIF
added to the features) -> ``depth`` x [x + SSA(x); x + MLP(x)] -> mean over
tokens and time -> linear head -> logits ``[N, classes]``.

Spikformer's max-pool is replaced by stride-2 convolution (same parameters;
max-pool has no Loihi mapping).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from .blocks import SpikingAttention, SpikingConv
from .dtss import DTSSGate, is_gate_parameter, mask_loss

if TYPE_CHECKING:
    from .presets import ViTConfig


class SpikingSelfAttention(torch.nn.Module):
    """SSA: q, k, v = conv1x1+BN+LIF (``qkv``); attention LIF and projection
    conv1x1+BN+LIF (``attn``). ``[N, C, H, W, T]`` -> same."""

    def __init__(self, cfg: ViTConfig, neuron: dict, dtss: bool, impl: str):
        super().__init__()
        c, t = cfg.embed_dim, cfg.t_max
        kw = dict(t_max=t, dtss=dtss, neuron_impl=impl)
        self.q = SpikingConv(neuron, c, c, 1, category='qkv', **kw)
        self.k = SpikingConv(neuron, c, c, 1, category='qkv', **kw)
        self.v = SpikingConv(neuron, c, c, 1, category='qkv', **kw)
        attn_neuron = dict(neuron, threshold=cfg.attn_threshold)
        self.attn = SpikingAttention(attn_neuron, c, cfg.heads, cfg.attn_scale, **kw)
        self.proj = SpikingConv(neuron, c, c, 1, category='attn', **kw)

    def forward(self, x):
        return self.proj(self.attn(self.q(x), self.k(x), self.v(x)))


class SpikingMLP(torch.nn.Module):
    """Two conv1x1+BN+LIF layers (``mlp``): C -> mlp_ratio*C -> C."""

    def __init__(self, cfg: ViTConfig, neuron: dict, dtss: bool, impl: str):
        super().__init__()
        c, hidden = cfg.embed_dim, cfg.embed_dim * cfg.mlp_ratio
        kw = dict(t_max=cfg.t_max, dtss=dtss, neuron_impl=impl, category='mlp')
        self.fc1 = SpikingConv(neuron, c, hidden, 1, **kw)
        self.fc2 = SpikingConv(neuron, hidden, c, 1, **kw)

    def forward(self, x):
        return self.fc2(self.fc1(x))


class TransformerBlock(torch.nn.Module):
    """``x = x + SSA(x); x = x + MLP(x)`` (sums of spikes: small integers)."""

    def __init__(self, cfg, neuron, dtss, impl):
        super().__init__()
        self.ssa = SpikingSelfAttention(cfg, neuron, dtss, impl)
        self.mlp = SpikingMLP(cfg, neuron, dtss, impl)

    def forward(self, x):
        x = x + self.ssa(x)
        return x + self.mlp(x)


class SpikingViT(torch.nn.Module):
    """Spikformer-style spiking ViT with a DTSS gate on every LIF layer.

    ``dtss=False`` gives the fixed-T baseline (every layer runs ``t_max`` steps).
    ``neuron_impl`` selects the fused neuron (``'fast'``) or stock SLAYER CUBA
    (``'stock'``); both give identical spikes. ``'ann'`` builds the ANN twin: the
    same architecture with ``AnalogActivation`` in place of every LIF (use it with
    ``t_max=1`` and ``dtss=False``).
    """

    def __init__(self, cfg: ViTConfig, dtss: bool = True, neuron_impl: str = 'fast'):
        super().__init__()
        self.cfg, self.dtss, self.neuron_impl = cfg, bool(dtss), neuron_impl
        neuron = dict(threshold=cfg.threshold, current_decay=1.0,
                      voltage_decay=cfg.voltage_decay, tau_grad=cfg.tau_grad,
                      scale_grad=cfg.scale_grad)
        kw = dict(t_max=cfg.t_max, dtss=dtss, neuron_impl=neuron_impl, category='sps')
        stages, cin = [], cfg.in_channels
        for cout, stride in cfg.sps:
            stages.append(SpikingConv(neuron, cin, cout, 3, stride, **kw))
            cin = cout
        if cin != cfg.embed_dim:
            raise ValueError(f'last SPS stage has {cin} channels, embed_dim is {cfg.embed_dim}')
        self.sps = torch.nn.ModuleList(stages)
        self.rpe = SpikingConv(neuron, cin, cin, 3, 1, **kw)
        self.blocks = torch.nn.ModuleList(
            TransformerBlock(cfg, neuron, dtss, neuron_impl) for _ in range(cfg.depth))
        self.head = torch.nn.Linear(cfg.embed_dim, cfg.num_classes)
        self.input_scale = 1.0    # exported models: 255 (8-bit integer inputs)
        self.readout_sum = False  # exported models: integer readout on sums

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Direct encoding: ``[N, C, H, W]`` -> ``[N, C, H, W, T]``."""
        c, s = self.cfg.in_channels, self.cfg.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (c, s, s):
            raise ValueError(f'expected images of shape [N, {c}, {s}, {s}], '
                             f'got {tuple(images.shape)}')
        dtype = next(self.sps.parameters()).dtype
        x = images if self.input_scale == 1 else torch.round(images.double() * self.input_scale)
        return x.to(dtype).unsqueeze(-1).expand(*x.shape, self.cfg.t_max)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Output of the last block, ``[N, C, H', W', T]`` (graded: sums of spikes)."""
        x = self.encode(images)
        for stage in self.sps:
            x = stage(x)
        x = x + self.rpe(x)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, classes]`` for images ``[N, C, H, W]`` in [0, 1]."""
        x = self.features(images)
        if self.readout_sum:  # exported integer readout: W sum + b L T
            return self.head(x.sum(dim=(2, 3, 4)).to(self.head.weight.dtype))
        return self.head(x.mean(dim=(2, 3, 4)))

    def forward_with_spikes(self, images: torch.Tensor):
        """``(logits, {layer name: output spikes [N, C, H, W, T]})``."""
        spikes = {}
        hooks = [m.register_forward_hook(lambda mod, i, o, n=n: spikes.__setitem__(n, o))
                 for n, m in self.gated_layers()]
        try:
            return self(images), spikes
        finally:
            for h in hooks:
                h.remove()

    # --- DTSS bookkeeping ---------------------------------------------------
    def gated_layers(self):
        """``(name, block)`` of every gated LIF layer, in data-flow order."""
        return [(n, m) for n, m in self.named_modules()
                if isinstance(m, (SpikingConv, SpikingAttention))]

    def gates(self):
        return [m for m in self.modules() if isinstance(m, DTSSGate)]

    def mask_loss(self, categories, weights=None) -> torch.Tensor:
        return mask_loss(self.gates(), categories, weights)

    def time_step_report(self) -> dict:
        """Per-layer active steps, and the plain and synaptic-operation-weighted
        average over gated layers (needs one forward pass for the op counts)."""
        layers = self.gated_layers()
        steps = {n: m.gate.active_steps for n, m in layers}
        plain = sum(steps.values()) / len(steps)
        report = {'active_steps': steps, 'avg_steps': plain}
        if all(m.last_shape is not None for _, m in layers):
            flops = {n: m.flops_per_step() for n, m in layers}
            total = sum(flops.values())
            report['avg_steps_weighted'] = sum(steps[n] * flops[n] for n in steps) / total
            report['flops_per_step'] = flops
            report['neurons'] = {n: math.prod(m.last_shape) for n, m in layers}
        return report


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not is_gate_parameter(n))
