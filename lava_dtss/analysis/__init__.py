"""The analysis stage: event-driven operation counts (``operations``), the
energy model (``energy``), and the study's parts: the sensitivity analysis
(``sensitivity``), the study itself (``study``), its report (``report``) and
the speed benchmark (``benchmark``), and the training health of a checkpoint
(``training_health``, docs/training.md). Names are imported on first use (the
study does not load PyTorch: its arms train in processes of their own)."""
import importlib

_API = {'EnergyModel': 'energy', 'ann_energy': 'energy', 'snn_energy': 'energy', 'OperationCounter': 'operations',
        'layer_health': 'training_health'}

__all__ = list(_API)


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'.{_API[name]}', __name__), name)
    globals()[name] = value
    return value
