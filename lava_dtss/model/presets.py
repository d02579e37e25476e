"""Architectures of the spiking ViT by name (timm-style presets): the
configuration dataclass, the presets and ``build_model``."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .vit import SpikingViT


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a spiking ViT. ``sps`` lists ``(channels, stride)`` of
    the 3x3 stem convolutions; the last one's channels is ``embed_dim``."""
    name: str
    in_channels: int
    image_size: int
    num_classes: int
    embed_dim: int
    depth: int
    heads: int
    mlp_ratio: int
    sps: tuple
    t_max: int = 4
    threshold: float = 1.0
    voltage_decay: float = 0.5      # LIF tau = 2
    attn_threshold: float = 0.5
    attn_scale: float = 0.125
    tau_grad: float = 0.01
    scale_grad: float = 20.0

    def to_dict(self):
        d = asdict(self)
        d['sps'] = [list(s) for s in self.sps]
        return d

    @staticmethod
    def from_dict(d: dict) -> 'ViTConfig':
        d = dict(d)
        d['sps'] = tuple(tuple(int(v) for v in s) for s in d['sps'])
        return ViTConfig(**d)


def _sps(c, strides):
    """Stem channel plan C/8, C/4, C/2, C (Spikformer) with given strides."""
    chans = [c // 8, c // 4, c // 2, c]
    return tuple(zip(chans, strides))


PRESETS = {
    # scikit-learn digits, 8x8 grey -> 4x4 = 16 tokens
    'tiny': ViTConfig('tiny', 1, 8, 10, embed_dim=32, depth=1, heads=2, mlp_ratio=2,
                      sps=((16, 1), (32, 2)), t_max=8),
    # Fashion-MNIST 28x28 grey -> 7x7 = 49 tokens
    'fmnist': ViTConfig('fmnist', 1, 28, 10, embed_dim=64, depth=1, heads=4, mlp_ratio=2,
                        sps=((16, 1), (32, 2), (64, 2)), t_max=4),
    # CIFAR-10/100 32x32 -> 8x8 = 64 tokens; Spikformer-4-384 (9.32 M parameters)
    'spikformer-4-384': ViTConfig('spikformer-4-384', 3, 32, 10, embed_dim=384, depth=4,
                                  heads=12, mlp_ratio=4, sps=_sps(384, (1, 1, 2, 2)), t_max=4),
    # ImageNet 224x224 -> 14x14 = 196 tokens; Spikformer-8-768
    'spikformer-8-768': ViTConfig('spikformer-8-768', 3, 224, 1000, embed_dim=768, depth=8,
                                  heads=12, mlp_ratio=4, sps=_sps(768, (2, 2, 2, 2)), t_max=4),
}


def get_config(preset: str, **overrides) -> ViTConfig:
    """Preset by name, with fields overridden (e.g. ``num_classes``, ``t_max``)."""
    if preset not in PRESETS:
        raise ValueError(f'unknown preset {preset!r}; expected one of {sorted(PRESETS)}')
    d = PRESETS[preset].to_dict()
    d.update({k: v for k, v in overrides.items() if v is not None})
    return ViTConfig.from_dict(d)


def build_model(preset: str, dtss: bool = True, neuron_impl: str = 'fast', **overrides) -> SpikingViT:
    """Model from a preset name (``tiny``, ``fmnist``, ``spikformer-4-384``,
    ``spikformer-8-768``) with config fields overridden."""
    return SpikingViT(get_config(preset, **overrides), dtss=dtss, neuron_impl=neuron_impl)
