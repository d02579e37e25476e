"""The deployed model is the trained model (issue 15): the export refuses what it
cannot write exactly, ``--check-loihi`` reports what Loihi 2 cannot represent, and
the exported fixed-point model keeps the trained model's accuracy and spikes."""
import numpy as np
import pytest
import torch

from lava_dtss.deploy.export import export_hdf5
from lava_dtss.model import build_model


def test_export_refuses_a_batchnorm_shift_under_a_decaying_current(tmp_path):
    """Training adds BatchNorm's shift to the synaptic current; the export writes
    it as a voltage bias, the same only when the current decays fully each step
    (iDecay 4096). A block with another current decay and a shift is one
    ValueError naming the layer (before: a different network, no error)."""
    torch.manual_seed(1)
    model = build_model('tiny')
    export_hdf5(model, str(tmp_path / 'ok.net'))   # every preset: current decay 1
    block = model.sps[0]
    block.norm.bias.data.fill_(0.25)
    export_hdf5(model, str(tmp_path / 'ok2.net'))  # a shift, current decay 1: exact
    block.neuron.current_decay.data.fill_(2048.0)
    with pytest.raises(ValueError, match=r'layer sps\.0: .*BatchNorm shift.*iDecay 2048'):
        export_hdf5(model, str(tmp_path / 'bad.net'))
    block.norm.bias.data.zero_()
    block.norm.running_mean.zero_()
    export_hdf5(model, str(tmp_path / 'noshift.net'))   # no shift: nothing to misplace
