"""Every NetX network file shipped in the lava-dl wheel (its own test networks,
``tests/lava/lib/dl/netx``), run from the command line (``scripts/run_lava.py``
as a subprocess, with ``--input``/``--input-bias`` and ``--save-spikes``) and
compared with stock ``lava.lib.dl.netx.hdf5.Network`` driven through its Python
API the way lava-dl's own tests drive it: every layer's output at every Lava
step, 0 mismatches. Where lava-dl ships ground truth, the command line's output
is compared with it too; sigma-delta (SDNN) files compare graded messages.
An option this runtime refuses must be refused in one line.

Runs are short (stock NetX takes ~8 s per step on PilotNet) but cover every
layer of every file."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

from lava_dtss.deploy import lava_runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'run_lava.py')


def _lava_dl_tests():
    from lava.lib.dl import netx     # site-packages/lava/lib/dl/netx/__init__.py
    site = os.path.abspath(os.path.join(os.path.dirname(netx.__file__), *['..'] * 4))
    return os.path.join(site, 'tests', 'lava', 'lib', 'dl', 'netx')


NETX = _lava_dl_tests()
FILES = ['tiny.net', 'mnist.net', 'gts/pilotnet_lif/network.net', 'gts/ntidigits/ntidigits.net',
         'gts/pilotnet_sdnn/network.net', 'gts/pilotnet_sdnn/square_network.net']


def _cli(args, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def _ran(res):
    assert res.returncode == 0 and 'Traceback' not in res.stderr, (res.returncode, res.stderr[-3000:])


def _one_error(res):
    assert res.returncode == 2 and 'Traceback' not in res.stderr, (res.returncode, res.stderr[-3000:])
    errors = [line for line in res.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1, res.stderr
    return errors[0]


def _assert_identical(ours: dict, stock: list, steps: int):
    """``ours``: the saved layers (``[..., K]``, CHW), in file order; ``stock``:
    ``run_stock_netx`` outputs of the same layers over ``steps`` Lava steps."""
    assert len(ours) == len(stock), (list(ours), len(stock))
    for (name, o), s in zip(ours.items(), stock):
        assert o.shape[:-1] == s.shape[:-1] and o.shape[-1] >= steps, (name, o.shape, s.shape)
        mismatches = int(np.abs(o[..., :steps] - s).sum())
        assert mismatches == 0, f'{name}: {mismatches} spikes differ from stock NetX'


def test_every_lava_dl_network_file_has_a_check_here():
    """A lava-dl version that ships another network file fails here until it is covered."""
    found = sorted(os.path.relpath(p, NETX) for p in glob.glob(os.path.join(NETX, '**', '*.net'),
                                                                 recursive=True))
    assert found == sorted(FILES)


def test_tiny_net_bias_driven_input_neuron(tmp_path):
    """lava-dl's ``test_tinynet``: the input neuron driven by its bias
    (``gts/tinynet/input_bias.npy``, Lava's (W, H, C) order: ``--layout whc``),
    17 steps, reset interval 17. Every layer as stock NetX; the output as
    lava-dl's ground truth (its test's comparison: steps 3..17)."""
    out = tmp_path / 'tiny.npz'
    bias = os.path.join(NETX, 'gts/tinynet/input_bias.npy')
    _ran(_cli(['--model', os.path.join(NETX, 'tiny.net'), '--input-bias', bias, '--layout', 'whc',
               '--t-max', '17', '--reset-interval', '17', '--save-spikes', str(out), '--save-layers', 'all']))
    ours = dict(np.load(out))
    assert list(ours) == ['layer0', 'layer1', 'layer2'] and ours['layer2'].shape == (1, 1, 36, 19)  # WHC
    stock = lava_runtime.run_stock_netx(os.path.join(NETX, 'tiny.net'), np.zeros((3, 16, 16, 17)), 17,
                                        input_bias=np.load(bias).transpose(2, 1, 0))
    _assert_identical({n: a.transpose(2, 1, 0, 3) for n, a in ours.items()}, stock, 17)
    gt = np.load(os.path.join(NETX, 'gts/tinynet/output.npy'))[0].transpose([2, 1, 0, 3])[..., 1:]
    assert ours['layer2'][..., 2:17].sum() > 0
    assert np.array_equal(ours['layer2'][..., 2:17], gt)


def test_mnist_net_data_into_the_input_neuron(tmp_path):
    """``--input [N, T]`` into mnist.net's input neuron (784 values, graded
    synaptic input), three dense layers, the last without neuron (stock's
    default integrator that never fires)."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 160, (784, 8)) * (rng.random((784, 8)) < 0.5)
    np.save(tmp_path / 'in.npy', data)
    out = tmp_path / 'mnist.npz'
    _ran(_cli(['--model', os.path.join(NETX, 'mnist.net'), '--input', str(tmp_path / 'in.npy'),
               '--save-spikes', str(out), '--save-layers', 'all']))
    ours = dict(np.load(out))
    assert [int(a.sum() > 0) for a in ours.values()] == [1, 1, 1, 0]
    stock = lava_runtime.run_stock_netx(os.path.join(NETX, 'mnist.net'), data.astype(float))
    _assert_identical(ours, stock, 8)


def test_pilotnet_lif_all_layers(tmp_path):
    """PilotNet LIF (input neuron driven by the image as its bias, as lava-dl's
    ``test_pilotnet_lif``; 5 conv, 4 dense layers, per-axis stride and
    padding, reset interval 16): 16 steps from the command line; stock NetX
    on the first 2 steps (~8 s a step); lava-dl's Loihi ground-truth spikes
    of the input and of the 8 layers that have them over steps 1..16 (from
    step 17 the hardware's reset phase is not NetX's)."""
    gts = os.path.join(NETX, 'gts/pilotnet_lif')
    out = tmp_path / 'pilot.npz'
    _ran(_cli(['--model', os.path.join(gts, 'network.net'), '--input-bias', os.path.join(gts, 'image.npy'),
               '--layout', 'whc', '--t-max', '16', '--reset-interval', '16', '--save-spikes', str(out),
               '--save-layers', 'all']))
    ours = {n: a.transpose(2, 1, 0, 3) if a.ndim == 4 else a for n, a in np.load(out).items()}
    assert len(ours) == 10 and all(a.shape[-1] == 16 + 9 for a in ours.values())
    image = np.load(os.path.join(gts, 'image.npy')).transpose(2, 1, 0)
    stock = lava_runtime.run_stock_netx(os.path.join(gts, 'network.net'), np.zeros((3, 66, 200, 2)), 16,
                                        input_bias=image)
    _assert_identical(ours, stock, 2)
    names = ['input'] + [f'conv-{k}' for k in range(5)] + [f'fc-{k}' for k in range(3)]
    for (layer, o), name in zip(ours.items(), names):
        gt = np.load(os.path.join(gts, f'{name}.npy'))
        gt = gt.transpose(2, 1, 0, 3) if gt.ndim == 4 else gt
        assert np.array_equal(o[..., :16], gt[..., :16]), (layer, name)


def test_ntidigits_first_five_layers_and_the_average_layer_refused(tmp_path):
    """ntidigits.net ends in an ``average`` layer (stock NetX refuses it too):
    one line naming it; with ``--num-layers 5`` (as lava-dl's test) its input
    spikes ``[N, T]`` (150 of the 3000 steps), dense layers with axonal delays
    up to 62 steps, as stock NetX and as lava-dl's ground truth."""
    path = os.path.join(NETX, 'gts/ntidigits/ntidigits.net')
    data = np.load(os.path.join(NETX, 'gts/ntidigits/input.npy'))[:, :150]
    np.save(tmp_path / 'in.npy', data)
    line = _one_error(_cli(['--model', path, '--input', str(tmp_path / 'in.npy')]))
    assert "layer 5 (average): layer type 'average' is not supported" in line and '--num-layers' in line
    out = tmp_path / 'out.npy'
    _ran(_cli(['--model', path, '--num-layers', '5', '--input', str(tmp_path / 'in.npy'),
               '--save-spikes', str(out)]))
    ours = np.load(out)
    stock = lava_runtime.run_stock_netx(path, data, num_layers=5, record='last')
    assert ours.shape == (242, 153) and ours.sum() > 0
    _assert_identical({'layer4': ours}, stock, 150)
    gt = np.load(os.path.join(NETX, 'gts/ntidigits/output.npy'))
    assert np.array_equal(ours[:, :149], gt[:, 1:150])      # lava-dl's output.npy leads by one step


def test_pilotnet_sdnn_all_layers_and_lava_dl_ground_truth(tmp_path):
    """lava-dl's ``test_pilotnet_sdnn``: PilotNet SDNN (Delta input encoder, 4
    conv and 3 dense sigma-delta layers, a Sigma output; graded 16-bit
    messages), its ``input.npy`` frame (Lava's (W, H, C) order, one step) at
    every step for 9 steps, as lava-dl's test runs it (a RingBuffer of that one
    step repeats it). Every layer's graded output at every step as stock NetX's; the output
    layer as lava-dl's ``output.npy`` (its test requires error 0)."""
    gts = os.path.join(NETX, 'gts/pilotnet_sdnn')
    frame = np.load(os.path.join(gts, 'input.npy'))[..., 0]            # (W, H, C)
    np.save(tmp_path / 'in.npy', np.repeat(frame[..., None], 9, axis=-1))
    out = tmp_path / 'sdnn.npz'
    _ran(_cli(['--model', os.path.join(gts, 'network.net'), '--input', str(tmp_path / 'in.npy'),
               '--layout', 'whc', '--save-spikes', str(out), '--save-layers', 'all']))
    ours = {n: a.transpose(2, 1, 0, 3) if a.ndim == 4 else a for n, a in np.load(out).items()}
    assert len(ours) == 9 and all(a.dtype == np.int32 for a in ours.values())
    assert all(np.abs(a[..., :9]).max() > 64 for a in ours.values())   # graded, not 0/1
    stock = lava_runtime.run_stock_netx(os.path.join(gts, 'network.net'),
                                        np.repeat(frame.transpose(2, 1, 0)[..., None], 9, axis=-1))
    _assert_identical(ours, stock, 9)
    gt = np.load(os.path.join(gts, 'output.npy'))                      # (1, 9)
    assert np.abs(ours['layer9'][..., :9] - gt).sum() == 0


def test_pilotnet_sdnn_square_network_all_layers(tmp_path):
    """square_network.net (the same encoder and 4 conv sigma-delta layers on
    33 x 33 frames, no output layer): a changing input with negative values
    (the delta encoder sends negative messages) for 6 steps, every layer as
    stock NetX."""
    path = os.path.join(NETX, 'gts/pilotnet_sdnn/square_network.net')
    data = np.random.default_rng(0).integers(-60, 64, (3, 33, 33, 6))
    np.save(tmp_path / 'in.npy', data)
    out = tmp_path / 'sq.npz'
    _ran(_cli(['--model', path, '--input', str(tmp_path / 'in.npy'), '--save-spikes', str(out),
               '--save-layers', 'all']))
    ours = dict(np.load(out))
    assert len(ours) == 5 and all((a[..., :6] < 0).any() for a in ours.values())
    _assert_identical(ours, lava_runtime.run_stock_netx(path, data), 6)


@pytest.mark.parametrize('args, what', [
    (['--reset-interval', '4'], 'a reset interval (stock NetX ignores it with a warning) is not supported '
                                'with a sigma-delta (SDNN) network'),
    (['--skip-input-neuron'], 'layer 0 (input): --skip-input-neuron with a sigma-delta (SDNN) input layer')])
def test_pilotnet_sdnn_unsupported_options_in_one_line(tmp_path, args, what):
    np.save(tmp_path / 'in.npy', np.zeros((3, 33, 33, 2)))
    path = os.path.join(NETX, 'gts/pilotnet_sdnn/square_network.net')
    line = _one_error(_cli(['--model', path, '--input', str(tmp_path / 'in.npy')] + args))
    assert what in line, line


def test_pilotnet_sdnn_nir_export_refused_in_one_line(tmp_path):
    """The NIR exporter writes CUBA-LIF networks: an SDNN file is one error line."""
    path = os.path.join(NETX, 'gts/pilotnet_sdnn/square_network.net')
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    res = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'export_nir.py'), path, '--out',
                          str(tmp_path / 'x.nir')], capture_output=True, text=True, timeout=300, env=env)
    line = _one_error(res)
    assert 'layer 0 (input' in line and 'sigma-delta (SDNN) neurons are not exported to NIR' in line
    assert not (tmp_path / 'x.nir').exists()
