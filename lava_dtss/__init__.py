"""lava-dtss: Dynamic Time Step Spiking (DTSS) vision transformers, trained with
lava-dl SLAYER, exported to NetX HDF5 and run on Lava.

The public API, by stage (tensors are ``[N, C, H, W, T]``, time last)::

    model       build_model, SpikingViT, ViTConfig, PRESETS, DTSSGate, mask_loss
    training    load_dataset, evaluate, recalibrate_batchnorm
    export      export_hdf5, deployed_model, read_netx, write_netx
    Lava        lava_runtime.run (import lava_dtss.lava_runtime; starts Lava processes)
    analysis    OperationCounter, EnergyModel, snn_energy, ann_energy
"""
from .data import load_dataset
from .dtss import CATEGORIES, DTSSGate, mask_loss
from .energy import EnergyModel, ann_energy, snn_energy
from .export import deployed_model, export_hdf5
from .model import PRESETS, SpikingViT, ViTConfig, build_model
from .netx_file import NetXFormatError, read_netx, write_netx
from .operations import OperationCounter
from .training import evaluate, recalibrate_batchnorm

__all__ = ['load_dataset', 'CATEGORIES', 'DTSSGate', 'mask_loss', 'EnergyModel', 'ann_energy',
           'snn_energy', 'deployed_model', 'export_hdf5', 'PRESETS', 'SpikingViT', 'ViTConfig',
           'build_model', 'NetXFormatError', 'read_netx', 'write_netx', 'OperationCounter',
           'evaluate', 'recalibrate_batchnorm']
