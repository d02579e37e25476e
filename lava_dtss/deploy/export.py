"""NetX HDF5 export of a trained DTSS spiking ViT, and the exact fixed-point
("deployed") model rebuilt from such a file.

The file follows lava-dl NetX's conventions for every layer NetX knows
(``input``, ``conv``, ``flatten``, ``dense``) and adds documented extensions
for the rest; the schema is in ``docs/hdf5_schema.md``.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from ..loihi2 import MAX_WEIGHT, current_shift_is_voltage_bias
from ..model.blocks import SpikingConv
from ..model.presets import ViTConfig
from ..model.vit import SpikingViT
from .netx_file import FORMAT, LayerSpec, NetSpec, read_netx, write_netx

INPUT_SCALE = 255  # image value in [0, 1] -> integer input of 8 bits


def neuron_spec(hw: dict) -> dict:
    """NetX ``neuron`` group of a CUBA-LIF with hardware integers."""
    return {'type': 'CUBA', 'iDecay': hw['iDecay'], 'vDecay': hw['vDecay'],
            'vThMant': hw['vThMant'], 'refDelay': 1, 'gradedSpike': False}


def conv_spec(name: str, weight: np.ndarray, bias: np.ndarray, shape: tuple, neuron: dict,
              stride: int = 1, padding: int = 0, inputs=(), category: str = '',
              active_steps: int | None = None) -> LayerSpec:
    """A ``conv`` layer with NetX's keys; ``weight [Co, Ci, k, k]`` integers."""
    co, ci, k, _ = weight.shape
    return LayerSpec(
        type='conv', name=name, shape=tuple(shape), inputs=list(inputs), category=category,
        active_steps=active_steps, neuron=dict(neuron),
        params={'inChannels': ci, 'outChannels': co, 'kernelSize': np.array([k, k]),
                'stride': np.array([stride] * 2), 'padding': np.array([padding] * 2),
                'dilation': np.array([1, 1]), 'groups': 1, 'weight': weight, 'bias': bias})


def dense_spec(name: str, weight: np.ndarray, bias: np.ndarray, neuron: dict, inputs=(),
               category: str = '', active_steps: int | None = None) -> LayerSpec:
    """A ``dense`` layer with NetX's keys; ``weight [out, in]`` integers."""
    return LayerSpec(type='dense', name=name, shape=(weight.shape[0],), inputs=list(inputs),
                     category=category, active_steps=active_steps, neuron=dict(neuron),
                     params={'inFeatures': weight.shape[1], 'outFeatures': weight.shape[0],
                             'weight': weight, 'bias': bias})


def _conv_spec(name, block: SpikingConv, inputs, input_scale) -> LayerSpec:
    # largest input value: a pixel (inputScale) where the layer reads the input layer (index 0),
    # else one spike from each layer summed into its input
    hw = block.hardware_params(input_scale, input_scale if list(inputs) == [0] else len(inputs))
    if block.norm is not None and not current_shift_is_voltage_bias(hw['iDecay']) \
            and bool(block.folded(input_scale)[1].abs().max() > 0):
        raise ValueError(f'layer {name}: its BatchNorm shift is added to the synaptic current, which '
                         f'decays with iDecay {hw["iDecay"]} (not 4096, current decay 1); the export '
                         'writes it as a voltage bias, exact only when the current does not carry over '
                         'between steps: this layer cannot be exported')
    return conv_spec(name, hw['weight'], hw['bias'], block.last_shape, neuron_spec(hw),
                     block.stride, block.padding, inputs, block.gate.category, hw['activeSteps'])


def model_to_spec(model: SpikingViT, dataset: str = '', command: str = '') -> NetSpec:
    """Graph of hardware layers (integers) for ``model``; needs one forward pass
    before (shapes), done here on a zero image."""
    cfg = model.cfg
    with torch.no_grad():
        was = model.training
        model.eval()
        model(torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size))
        model.train(was)
    layers = [LayerSpec(type='input', name='input', shape=(cfg.in_channels, cfg.image_size, cfg.image_size),
                        params={'inputScale': INPUT_SCALE})]

    def add(spec):
        layers.append(spec)
        return len(layers) - 1

    src, scale = [0], float(INPUT_SCALE)
    for i, stage in enumerate(model.sps):
        src, scale = [add(_conv_spec(f'sps.{i}', stage, src, scale))], 1.0
    x = src + [add(_conv_spec('rpe', model.rpe, src, 1.0))]
    for b, block in enumerate(model.blocks):
        p = f'blocks.{b}'
        ssa = block.ssa
        q, k, v = (add(_conv_spec(f'{p}.ssa.{n}', getattr(ssa, n), x, 1.0)) for n in 'qkv')
        hw = ssa.attn.hardware_params()
        c, h, w = ssa.attn.last_shape
        a = add(LayerSpec(type='attention', name=f'{p}.ssa.attn', shape=(c, h, w), inputs=[q, k, v],
                          category='attn', active_steps=hw['activeSteps'], neuron=neuron_spec(hw),
                          params={'weight': hw['weight'], 'heads': hw['heads']}))
        x = x + [add(_conv_spec(f'{p}.ssa.proj', ssa.proj, [a], 1.0))]
        f1 = add(_conv_spec(f'{p}.mlp.fc1', block.mlp.fc1, x, 1.0))
        x = x + [add(_conv_spec(f'{p}.mlp.fc2', block.mlp.fc2, [f1], 1.0))]
    # readout: logits = W (sum over tokens and time of x) + b*L*T  (integer)
    c, h, w = layers[x[0]].shape
    count = h * w * cfg.t_max
    wt = model.head.weight.detach().double()
    bs = model.head.bias.detach().double()
    s = MAX_WEIGHT / max(float(wt.abs().max()), 1e-12)
    add(LayerSpec(type='readout', name='head', shape=(cfg.num_classes,), inputs=x,
                  params={'weight': torch.round(wt * s).to(torch.int64).numpy(),
                          'bias': torch.round(bs * s * count).to(torch.int64).numpy()}))
    meta = {'format': FORMAT, 'config': json.dumps(cfg.to_dict()), 'dtss': int(model.dtss),
            't_max': cfg.t_max, 'dataset': dataset, 'command': command}
    return NetSpec(layers=layers, meta=meta)


def export_hdf5(model: SpikingViT, path: str, dataset: str = '', command: str = '') -> NetSpec:
    """Write ``model`` to ``path`` (atomically) as NetX HDF5 with DTSS extensions."""
    spec = model_to_spec(model, dataset, command)
    write_netx(spec, path)
    return spec


def deployed_model(spec_or_path, dtype: torch.dtype = torch.float64) -> SpikingViT:
    """The training-side fixed-point model of a file: the same ``SpikingViT``
    blocks and neuron, with the file's integers, eval mode. Its spikes are what
    Lava must reproduce exactly. The layers compute in ``dtype`` (float32 only
    where ``reference.float32_is_exact`` holds), the readout in float64."""
    spec = spec_or_path if isinstance(spec_or_path, NetSpec) else read_netx(spec_or_path)
    if 'config' not in spec.meta:
        raise ValueError('file has no lava_dtss model configuration (meta/config): '
                         'a stock NetX file has no training-side model')
    cfg = ViTConfig.from_dict(json.loads(spec.meta['config']))
    model = SpikingViT(cfg, dtss=bool(spec.meta.get('dtss', 1)))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size))  # shapes
    modules = dict(model.named_modules())
    for layer in spec.layers:
        if layer.type in ('conv', 'attention'):
            if layer.name not in modules:
                raise ValueError(f'layer {layer.name!r} of the file is not in preset {cfg.name}')
            hw = dict(layer.params, **layer.neuron, activeSteps=layer.active_steps)
            modules[layer.name].load_hardware(hw)
        elif layer.type == 'readout':
            model.head.weight.data = torch.as_tensor(layer.params['weight'], dtype=torch.float64)
            model.head.bias.data = torch.as_tensor(layer.params['bias'], dtype=torch.float64)
        elif layer.type == 'input':
            model.input_scale = float(layer.params['inputScale'])
    model.readout_sum = True
    model = model.to(dtype)
    model.head.double()
    return model.requires_grad_(False)


def deployed_accuracy(path: str, loader) -> float:
    """Test accuracy of the exported fixed-point model."""
    from ..training.checkpoints import evaluate
    return evaluate(deployed_model(path), loader)['accuracy']


def export_checkpoint(checkpoint: str, out: str, data_dir: str = None, command: str = '',
                      overwrite: bool = False) -> dict:
    """Export a training checkpoint (``train``'s ``checkpoint.pt``) to the NetX
    file ``out`` and its model card (``.json`` beside it), and return the card:
    test accuracy of the float model and of the exported fixed-point one, active
    steps. Every part of the checkpoint is checked first (``ValueError``, one
    line); the data set is loaded before anything is written; a failure after
    the ``.net`` is written removes it: the file and its card exist together or
    not at all. An existing ``out`` or card (a finished run's export, which its
    metrics and checkpoint describe) is refused unless ``overwrite``."""
    import os

    card_path = os.path.splitext(out)[0] + '.json'
    existing = [p for p in (out, card_path) if os.path.exists(p)]
    if existing and not overwrite:
        raise ValueError(f'{" and ".join(existing)} already exist{"s" if len(existing) == 1 else ""}; '
                         'pass --overwrite to replace it, or choose another --out')
    from ..training import data
    from ..training.checkpoints import evaluate, load_checkpoint, model_from_checkpoint, write_json
    ckpt = load_checkpoint(checkpoint)
    model, train_args = model_from_checkpoint(ckpt, checkpoint)
    dataset = train_args.get('dataset', 'digits')
    test = data.load_dataset(dataset, 'test', data_dir or train_args.get('data_dir'))   # before writing
    loader = data.make_loader(test, 256, shuffle=False, seed=0)
    export_hdf5(model, out, dataset=dataset, command=command)
    try:      # the .net and its .json model card exist together or not at all
        ev = evaluate(model, loader)
        card = {'preset': model.cfg.name, 'dataset': dataset, 'dtss': model.dtss, 't_max': model.cfg.t_max,
                'test_accuracy': ev['accuracy'], 'quantized_test_accuracy': deployed_accuracy(out, loader),
                'active_steps': ev['active_steps'], 'avg_steps': ev['avg_steps'],
                'avg_steps_weighted': ev['avg_steps_weighted'], 'training': train_args,
                'command': command}
        write_json(card_path, card)
    except BaseException:
        if os.path.isfile(out):
            os.unlink(out)
        raise
    return card
