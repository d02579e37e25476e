"""The training stage: data sets (``data``), checkpoints, RNG state,
BatchNorm re-estimation and evaluation (``checkpoints``), and the training
loop as one function, ``train`` (``loop``)."""
from .checkpoints import (TrainingError, atomic_write, evaluate, init_distributed, init_weights,
                          learned_gate_steps, load_checkpoint, recalibrate_batchnorm, rng_state,
                          save_checkpoint, set_rng_state, write_json)
from .data import DatasetError, load_dataset
from .loop import TrainConfig, train

__all__ = ['TrainingError', 'atomic_write', 'evaluate', 'init_distributed', 'init_weights',
           'learned_gate_steps', 'load_checkpoint', 'recalibrate_batchnorm', 'rng_state', 'save_checkpoint',
           'set_rng_state', 'write_json', 'DatasetError', 'load_dataset', 'TrainConfig', 'train']
