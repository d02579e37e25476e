"""lava-dtss: Dynamic Time Step Spiking (DTSS) vision transformers, trained with
lava-dl SLAYER, exported to NetX HDF5 and run on Lava.

The public API, by stage (tensors are ``[N, C, H, W, T]``, time last)::

    model       build_model, SpikingViT, ViTConfig, PRESETS, DTSSGate, mask_loss, CATEGORIES  (lava_dtss.model)
    training    train, load_dataset, evaluate, recalibrate_batchnorm                          (lava_dtss.training)
    export      export_hdf5, deployed_model, read_netx, write_netx, NetXFormatError          (lava_dtss.deploy)
    Lava        lava_runtime.run, run_file (import lava_dtss.deploy.lava_runtime; starts Lava processes)
    analysis    OperationCounter, EnergyModel, snn_energy, ann_energy                        (lava_dtss.analysis)

Loihi 2's integer conventions and limits, and the fixed-point CUBA-LIF step,
are defined once, in ``lava_dtss.loihi2``; the numpy integer convolution,
fan-out and spike fingerprints of the Lava models in ``lava_dtss.fixed_point``
(both below every stage: ``lava_processes`` imports only these two).

Each name is imported from its stage on first use, so that ``import
lava_dtss.analysis.study`` (a study that trains in subprocesses) or
``lava_dtss.loihi2`` do not load PyTorch and lava-dl.
"""
import importlib

_API = {
    'build_model': 'model', 'SpikingViT': 'model', 'ViTConfig': 'model', 'PRESETS': 'model',
    'DTSSGate': 'model', 'mask_loss': 'model', 'CATEGORIES': 'model',
    'train': 'training', 'load_dataset': 'training', 'evaluate': 'training', 'recalibrate_batchnorm': 'training',
    'export_hdf5': 'deploy', 'deployed_model': 'deploy', 'read_netx': 'deploy', 'write_netx': 'deploy',
    'NetXFormatError': 'deploy',
    'OperationCounter': 'analysis', 'EnergyModel': 'analysis', 'snn_energy': 'analysis', 'ann_energy': 'analysis',
}
_STAGES = ('model', 'training', 'deploy', 'analysis', 'lava_processes', 'loihi2', 'fixed_point', 'commands')

__all__ = list(_API)


def __getattr__(name):
    if name in _API:
        value = getattr(importlib.import_module(f'.{_API[name]}', __name__), name)
    elif name in _STAGES:
        value = importlib.import_module(f'.{name}', __name__)
    else:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API) | set(_STAGES))
