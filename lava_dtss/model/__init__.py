"""The model stage: the CUBA-LIF neuron (``neuron``; its compiled loop
``cuba_kernel``), the DTSS gate (``dtss``), SLAYER-style blocks (``blocks``),
the spiking ViT (``vit``) and its presets (``presets``)."""
from .blocks import SpikingAttention, SpikingConv
from .dtss import CATEGORIES, DEFAULT_LOSS_CATEGORIES, DTSSGate, mask_loss
from .neuron import AnalogActivation, FastCubaNeuron, cuba_forward
from .presets import PRESETS, ViTConfig, build_model, get_config
from .vit import SpikingViT, count_parameters

__all__ = ['SpikingAttention', 'SpikingConv', 'CATEGORIES', 'DEFAULT_LOSS_CATEGORIES', 'DTSSGate',
           'mask_loss', 'AnalogActivation', 'FastCubaNeuron', 'cuba_forward', 'PRESETS', 'ViTConfig',
           'build_model', 'get_config', 'SpikingViT', 'count_parameters']
