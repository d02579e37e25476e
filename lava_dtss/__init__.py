"""lava-dtss: Dynamic Time Step Spiking (DTSS) vision transformers, trained with
lava-dl SLAYER, exported to NetX HDF5 and run on Lava.

The public API, by stage (tensors are ``[N, C, H, W, T]``, time last)::

    model       build_model, SpikingViT, ViTConfig, PRESETS, DTSSGate, mask_loss   (lava_dtss.model)
    training    train, load_dataset, evaluate, recalibrate_batchnorm               (lava_dtss.training)
    export      export_hdf5, deployed_model, read_netx, write_netx                 (lava_dtss.deploy)
    Lava        lava_runtime.run (import lava_dtss.deploy.lava_runtime; starts Lava processes)
    analysis    OperationCounter, EnergyModel, snn_energy, ann_energy              (lava_dtss.analysis)

Loihi 2's integer conventions and limits, and the fixed-point CUBA-LIF step,
are defined once, in ``lava_dtss.loihi2``.
"""
from .analysis import EnergyModel, OperationCounter, ann_energy, snn_energy
from .deploy import NetXFormatError, deployed_model, export_hdf5, read_netx, write_netx
from .model import CATEGORIES, PRESETS, DTSSGate, SpikingViT, ViTConfig, build_model, mask_loss
from .training import evaluate, load_dataset, recalibrate_batchnorm, train

__all__ = ['load_dataset', 'CATEGORIES', 'DTSSGate', 'mask_loss', 'EnergyModel', 'ann_energy',
           'snn_energy', 'deployed_model', 'export_hdf5', 'PRESETS', 'SpikingViT', 'ViTConfig',
           'build_model', 'NetXFormatError', 'read_netx', 'write_netx', 'OperationCounter',
           'evaluate', 'recalibrate_batchnorm', 'train']
