"""The analysis stage: event-driven operation counts (``operations``), the
energy model (``energy``); the study's parts, imported on their own:
``sensitivity``, ``study``, ``report``, ``benchmark``."""
from .energy import EnergyModel, ann_energy, snn_energy
from .operations import OperationCounter

__all__ = ['EnergyModel', 'ann_energy', 'snn_energy', 'OperationCounter']
