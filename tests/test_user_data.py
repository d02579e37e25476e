"""run_lava.py on the user's own data (``--input``, ``--input-bias``,
``--layout``, ``--save-spikes``, ``--num-layers``, ``--reset-offset``,
``--input-message-bits``): stock NetX's options against stock NetX, and every
bad value refused in one line before any Lava process starts."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from lava_dtss.deploy import lava_runtime
from lava_dtss.deploy.netx_file import NetXFormatError, read_netx
from lava_dtss.deploy.user_data import InputError

from test_stock_netx import NEURON, _export, _init
from script_loader import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_lava():
    return load_script('run_lava')


@pytest.fixture(scope='module')
def nets(tmp_path_factory):
    """A conv net with an input neuron (2x6x6) and a dense chain without (24)."""
    from lava.lib.dl import slayer
    d = tmp_path_factory.mktemp('nets')
    inp = slayer.block.cuba.Input(NEURON)
    inp(torch.zeros(1, 2, 6, 6, 2))
    conv = _export(str(d / 'conv.net'), (2, 6, 6), _init([
        slayer.block.cuba.Conv(NEURON, 2, 4, 3, padding=1), slayer.block.cuba.Flatten(),
        slayer.block.cuba.Dense(NEURON, 4 * 6 * 6, 5)], seed=21), input_neuron=inp)
    dense = _export(str(d / 'dense.net'), (24,), _init([
        slayer.block.cuba.Dense(NEURON, 24, 12), slayer.block.cuba.Dense(NEURON, 12, 6)], seed=22, lo=-40, hi=40))
    return {'conv': conv, 'dense': dense, 'dir': d}


def test_graded_input_and_reset_offset_are_step_identical_to_stock(nets):
    """``input_message_bits=8``: graded values reach layer 1 as they are (NetX's
    graded input); ``reset_offset=2`` with a reset interval of 4."""
    rng = np.random.default_rng(23)
    frames = rng.integers(0, 4, (1, 24, 10)) * (rng.random((1, 24, 10)) < 0.3)
    stock = lava_runtime.run_stock_netx(nets['dense'], frames[0].astype(float), 4, reset_offset=2,
                                        input_message_bits=8)
    ours = lava_runtime.run(read_netx(nets['dense']), frames, reset_interval=4, reset_offset=2,
                            input_message_bits=8, record=('layer1', 'layer2'))
    for name, s in zip(('layer1', 'layer2'), stock):
        assert s.sum() > 0 and np.array_equal(np.moveaxis(ours.spikes[name], 0, -1)[..., :10], s), name
    unary = lava_runtime.run(read_netx(nets['dense']), frames, reset_interval=4, reset_offset=2,
                             record=('layer1',))
    assert not np.array_equal(unary.spikes['layer1'], ours.spikes['layer1'])   # the bits matter


def test_cli_input_layouts_samples_and_save(nets, tmp_path):
    """The same data in (C, H, W) and (W, H, C) order, two samples back to
    back, give the same saved outputs (in the layout asked for); the input
    neuron's bias per sample; a .npy of the last layer by default."""
    run_lava = _run_lava()
    rng = np.random.default_rng(24)
    chw = rng.integers(0, 40, (2, 2, 6, 6, 5))
    bias = rng.integers(0, 20, (2, 2, 6, 6))
    np.save(tmp_path / 'chw.npy', chw)
    np.save(tmp_path / 'whc.npy', chw.transpose(0, 3, 2, 1, 4))
    np.save(tmp_path / 'bias.npy', bias)
    np.save(tmp_path / 'bias_whc.npy', bias.transpose(0, 3, 2, 1))
    base = ['--model', nets['conv'], '--save-layers', 'all']
    assert run_lava.main(base + ['--input', str(tmp_path / 'chw.npy'), '--input-bias', str(tmp_path / 'bias.npy'),
                                 '--save-spikes', str(tmp_path / 'a.npz')]) == 0
    assert run_lava.main(base + ['--input', str(tmp_path / 'whc.npy'), '--input-bias',
                                 str(tmp_path / 'bias_whc.npy'), '--layout', 'whc',
                                 '--save-spikes', str(tmp_path / 'b.npz')]) == 0
    a, b = np.load(tmp_path / 'a.npz'), np.load(tmp_path / 'b.npz')
    assert list(a) == ['layer0', 'layer1', 'layer3'] and a['layer1'].shape == (4, 6, 6, 2 * 5 + 2)
    assert a['layer1'].sum() > 0
    for n in a:
        assert np.array_equal(a[n], b[n].transpose(2, 1, 0, 3) if b[n].ndim == 4 else b[n]), n
    assert run_lava.main(['--model', nets['conv'], '--input', str(tmp_path / 'chw.npy'),
                          '--input-bias', str(tmp_path / 'bias.npy'), '--save-spikes', str(tmp_path / 'c.npy')]) == 0
    assert np.array_equal(np.load(tmp_path / 'c.npy'), a['layer3'])
    stream = np.concatenate(list(chw), -1).astype(float)    # stock NetX has one bias: sample 0 only
    stock = lava_runtime.run_stock_netx(nets['conv'], stream[..., :5], input_bias=bias[0])
    assert np.array_equal(a['layer1'][..., :5], stock[1])


BAD = {   # arguments -> words of the one error line
    'missing': (['--input', 'nowhere.npy'], 'nowhere.npy: no such file'),
    'not_npy': (['--input', 'text.npy'], 'not a NumPy .npy array'),
    'npz': (['--input', 'two.npz'], 'holds several arrays'),
    'nan': (['--input', 'nan.npy'], 'NaN or infinite'),
    'strings': (['--input', 'str.npy'], 'expected numbers'),
    'shape': (['--input', 'wrong.npy'], r'shape \(2, 5, 5, 4\) does not fit the network\'s input \(2, 6, 6\) '
                                        r'\(C, H, W\): expected \[C=2, H=6, W=6, T\] or \[N=72, T\]'),
    'whc_shape': (['--input', 'good.npy', '--layout', 'whc'], r'expected \[W=6, H=6, C=2, T\]'),
    'bias_float': (['--input-bias', 'fbias.npy', '--t-max', '3'], 'expected integers in -32768..32767'),
    'bias_no_t': (['--input-bias', 'bias.npy'], 'needs --t-max'),
    'bias_samples': (['--input', 'good.npy', '--input-bias', 'bias3.npy'], 'holds 3 samples'),
    't_max': (['--input', 'good.npy', '--t-max', '7'], '--t-max 7 differs from the 4 steps'),
    'dataset': (['--input', 'good.npy', '--dataset', 'digits'], '--dataset does not go with --input'),
    'samples': (['--input', 'good.npy', '--num-samples', '3'], '--num-samples does not go with'),
    'loihi': (['--input', 'good.npy', '--build', 'loihi'], 'drop --build loihi'),
    'save_ext': (['--input', 'good.npy', '--save-spikes', 'out.txt'], 'expected a .npy'),
    'save_npy_all': (['--input', 'good.npy', '--save-spikes', 'o.npy', '--save-layers', 'all'], 'need a .npz'),
    'save_folder': (['--input', 'good.npy', '--save-spikes', '/proc/x.npz'], '--save-spikes /proc/x.npz'),
    'save_layer': (['--input', 'good.npy', '--save-spikes', 'o.npz', '--save-layers', 'layer2'],
                   '--save-layers layer2: no such layer with neurons'),
    'layers_only': (['--input', 'good.npy', '--save-layers', 'all'], '--save-layers needs --save-spikes'),
    'num_layers': (['--input', 'good.npy', '--num-layers', '9'], 'num_layers 9 out of range 1..4'),
    'num_layers_0': (['--input', 'good.npy', '--num-layers', '0'], '--num-layers must be >= 1'),
    'flatten_only': (['--input', 'good.npy', '--num-layers', '1', '--skip-input-neuron'], 'hold no neuron'),
    'bits': (['--input', 'good.npy', '--input-message-bits', '40'], 'must be in 0..24'),
    'offset': (['--input', 'good.npy', '--reset-offset', '-1'], '--reset-offset must be >= 0'),
    'batch': (['--input', 'good.npy', '--batch', '4'], '--batch 4 does not go with --input'),
    'exit_policy': (['--input', 'good.npy', '--exit-policy', 'margin', '--exit-threshold', '3'],
                    '--exit-policy does not go with --input'),
    'no_input': (['--num-layers', '2', '--t-max', '4'], '--num-layers goes with --input'),
    'no_input_save': (['--save-spikes', 'o.npy'], '--save-spikes goes with --input'),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_user_data_is_one_error_before_lava(nets, tmp_path, case, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save('good.npy', np.ones((2, 6, 6, 4)))
    np.save('wrong.npy', np.ones((2, 5, 5, 4)))
    np.save('nan.npy', np.full((2, 6, 6, 4), np.nan))
    np.save('str.npy', np.array(['a', 'b']))
    np.save('bias.npy', np.ones((2, 6, 6), int))
    np.save('bias3.npy', np.ones((3, 2, 6, 6), int))
    np.save('fbias.npy', np.full((2, 6, 6), 0.5))
    np.savez('two.npz', a=np.ones(2), b=np.ones(2))
    open('text.npy', 'w').write('not an array')
    args, words = BAD[case]
    monkeypatch.setattr(lava_runtime, 'execute', lambda *a, **k: pytest.fail('a Lava run started'))
    with pytest.raises((ValueError, NetXFormatError)) as e:
        _run_lava().main(['--model', nets['conv']] + args)
    assert '\n' not in str(e.value)
    assert re.search(words, str(e.value)), str(e.value)


def test_bias_on_a_file_without_input_neuron_and_the_one_line_from_the_shell(nets, tmp_path):
    np.save(tmp_path / 'b.npy', np.ones((24,), int))
    with pytest.raises(InputError, match='has no input layer with a neuron'):
        _run_lava().main(['--model', nets['dense'], '--input-bias', str(tmp_path / 'b.npy'), '--t-max', '2'])
    np.save(tmp_path / 'w.npy', np.ones((23, 4)))
    res = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'run_lava.py'), '--model', nets['dense'],
                          '--input', str(tmp_path / 'w.npy')], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert res.returncode == 2 and 'Traceback' not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f'error: --input {tmp_path / "w.npy"}: shape (23, 4) does not fit the network\'s input (24,) '
        '(C, H, W): expected [N=24, T] (chw layout, --layout), optionally with a leading sample axis')


def _two_input_file(path, inputs, flatten=False):
    """A stock-style file (no meta/format): input (8,), dense 8, [flatten of 1], a dense fed by ``inputs``."""
    import h5py
    with h5py.File(path, 'w') as f:
        f['layer/0/type'] = np.array([b'input'])
        f['layer/0/shape'] = np.array([8])

        def dense(i, n, extra=None):
            g = f.create_group(f'layer/{i}')
            g['type'], g['shape'], g['weight'] = np.array([b'dense']), np.array([n]), np.full((n, 8), 20)
            for k, v in (('iDecay', 4096), ('vDecay', 4096), ('vThMant', 10)):
                g[f'neuron/{k}'] = v
            g['neuron/type'] = np.array([b'CUBA'])
            if extra is not None:
                g['dtss/inputs'] = np.array(extra)
        dense(1, 8)
        if flatten:
            f['layer/2/type'] = np.array([b'flatten'])
            f['layer/2/dtss/inputs'] = np.array([1])
        else:
            dense(2, 8, [0])
        dense(3, 4, inputs)
    return str(path)


@pytest.mark.parametrize('inputs,flatten,words', [
    ([2, 2], False, r'layer 3 \(dense \'layer3\'\): dtss/inputs \[2, 2\] name layer 2 twice;'),
    ([1, 2], True, r'dtss/inputs \[1, 2\] name layer 1 twice \(through flatten layer 2\)')])
def test_a_layer_fed_twice_by_one_source_is_one_error(tmp_path, inputs, flatten, words):
    """Was Lava's ``DuplicateConnectionError`` traceback."""
    path = _two_input_file(tmp_path / 'dup.net', inputs, flatten)
    with pytest.raises(NetXFormatError, match=words):
        read_netx(path)


def test_a_stock_file_with_two_inputs_into_one_layer(tmp_path):
    """Stock NetX reads no ``dtss/inputs`` (a chain): stock timing refuses the
    layer in one line naming it and ``--timing sync``, which runs it (the two
    sources summed)."""
    path = _two_input_file(tmp_path / 'two.net', [1, 2])
    np.save(tmp_path / 'in.npy', np.ones((8, 4)))
    run_lava = _run_lava()
    base = ['--model', path, '--input', str(tmp_path / 'in.npy')]
    with pytest.raises(ValueError, match=r"layer 3 \('layer3'\) has 2 inputs \(dtss/inputs \[1, 2\]\): stock "
                                         r"NetX timing needs a chain .* use timing 'sync' \(--timing sync\)"):
        run_lava.main(base)
    assert run_lava.main(base + ['--timing', 'sync', '--json', str(tmp_path / 'r.json')]) == 0
    import json
    layers = json.loads((tmp_path / 'r.json').read_text())['layers']
    assert layers['layer3']['spikes'] == 4 * 4     # 2 x 8 x 20 input every step: every neuron fires


@pytest.mark.parametrize('edit,words', [
    ('vth', r"layer layer1: vThMant 131072 exceeds 17 bits"),
    ('weight', r'layer layer2: weights in \[.*\] need a \d+-bit mantissa')])
def test_build_loihi_refuses_what_loihi_2_cannot_hold(nets, tmp_path, edit, words):
    """A stock file with a threshold of 2^17 or weights of 2^40 was mapped to
    Loihi 2 processes as it was (issue 18's lesser faults)."""
    import h5py
    import shutil
    path = str(tmp_path / 'big.net')
    shutil.copy(nets['dense'], path)
    with h5py.File(path, 'a') as f:
        if edit == 'vth':
            f['layer/1/neuron/vThMant'][()] = 1 << 17
        else:
            w = f['layer/2/weight'][()]
            del f['layer/2/weight']
            f['layer/2/weight'] = w.astype(np.int64) * (1 << 40) + 1
    with pytest.raises(ValueError, match=words + r'.*; --build loihi maps to Loihi 2'):
        _run_lava().main(['--model', path, '--build', 'loihi', '--t-max', '4', '--num-samples', '1',
                          '--dataset', 'digits'])


@pytest.mark.parametrize('extra', [['--timing', 'stock'], ['--reset-interval', '4']])
def test_fused_only_options_with_build_loihi_are_refused(nets, extra):
    """They were silently ignored with --build loihi."""
    with pytest.raises(ValueError, match='--timing and --reset-interval apply to the fused runtime only'):
        _run_lava().main(['--model', nets['dense'], '--build', 'loihi', '--t-max', '4'] + extra)


def test_saved_voltages_equal_stock_netx_lif_v(tmp_path):
    """``--save-voltages``: every layer's ``v`` after every step, as stock
    NetX's ``LIF.v`` read by a Lava ``Monitor`` (tiny.net, bias-driven input
    neuron, reset interval 5: the resets are in it)."""
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io
    from lava.proc.monitor.process import Monitor
    root = os.path.join(os.path.dirname(netx.__file__), *['..'] * 4, 'tests', 'lava', 'lib', 'dl', 'netx')
    path, bias_file, steps = os.path.join(root, 'tiny.net'), os.path.join(root, 'gts/tinynet/input_bias.npy'), 10
    assert _run_lava().main(['--model', path, '--input-bias', bias_file, '--layout', 'whc', '--t-max', str(steps),
                             '--reset-interval', '5', '--save-voltages', str(tmp_path / 'v.npz'),
                             '--save-layers', 'all']) == 0
    ours = np.load(tmp_path / 'v.npz')        # whc layout: [W, H, C, K]
    net = netx.hdf5.Network(net_config=path, reset_interval=5)
    net.in_layer.neuron.bias_mant.init = np.load(bias_file).astype(np.int32)
    src = io.source.RingBuffer(data=np.zeros(net.in_layer.neuron.a_in.shape + (steps,)))
    src.s_out.connect(net.in_layer.neuron.a_in)
    monitors = []
    for layer in net.layers:
        m = Monitor()
        m.probe(layer.neuron.v, steps)
        monitors.append(m)
    try:
        net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag='fixed_pt'))
        stock = [np.asarray(m.get_data()[layer.neuron.name]['v']) for m, layer in zip(monitors, net.layers)]
    finally:
        net.stop()
    assert list(ours) == ['layer0', 'layer1', 'layer2']
    for (name, o), s, layer in zip(ours.items(), stock, net.layers):
        s = s.reshape((steps,) + tuple(layer.neuron.v.shape))          # [K, W, H, C]
        assert np.abs(s).sum() > 0 and np.array_equal(np.moveaxis(o, -1, 0)[:steps], s), name
