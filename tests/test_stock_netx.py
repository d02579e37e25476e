"""Stock NetX files made with lava-dl's own blocks (``slayer.block.cuba``,
``sigma_delta``) and exported with lava-dl's ``export_hdf5``: our runtime in
its stock timing against stock ``netx.hdf5.Network`` on Lava's CPU simulator,
every layer's spikes at every Lava step; unsupported features refused with one
error naming them."""
import shutil

import h5py
import numpy as np
import pytest
import torch

from lava_dtss.deploy import lava_runtime
from lava_dtss.fixed_point import fingerprint
from lava_dtss.deploy.netx_file import NetXFormatError, read_netx

NEURON = {'threshold': 0.5, 'current_decay': 0.25, 'voltage_decay': 0.1, 'requires_grad': False}


def _export(path, in_shape, blocks, biases=None, input_neuron=None):
    """Write ``layer/0`` = a plain input of ``in_shape`` (C, H, W) or, with
    ``input_neuron``, the export of that ``slayer.block.*.Input``; then every
    block's own ``export_hdf5``; ``biases {block index: int array}`` add a
    ``bias`` dataset (NetX reads it; cuba blocks have none)."""
    x = torch.zeros((1,) + tuple(in_shape) + (2,))
    with torch.no_grad():                  # SLAYER blocks learn their shapes in forward
        for b in blocks:
            x = b(x)
    with h5py.File(path, 'w') as f:
        layer = f.create_group('layer')
        if input_neuron is None:
            g = layer.create_group('0')
            g.create_dataset('type', (1,), 'S10', [b'input'])
            g.create_dataset('shape', data=np.array(in_shape))
        else:
            input_neuron.export_hdf5(layer.create_group('0'))
        for i, b in enumerate(blocks, start=1):
            g = layer.create_group(f'{i}')
            b.export_hdf5(g)
            if biases and i - 1 in biases:
                g.create_dataset('bias', data=np.asarray(biases[i - 1]))
    return path


def _init(blocks, seed, lo=-40, hi=80):
    """Integer hardware weights (SLAYER weight = w / 64) drawn in ``lo..hi``."""
    g = torch.Generator().manual_seed(seed)
    for b in blocks:
        syn = getattr(b, 'synapse', None)
        if syn is not None:
            w = torch.randint(lo, hi, syn.weight.shape, generator=g).float() / 64
            syn.weight.data = w
    return blocks


def _compare(path, frames, t_max, reset_interval=None, last=False, skip_input_neuron=False,
             input_bias=None, reset_offset=0):
    """Run both on ``frames [S, C, H, W, T]`` (samples back to back) and assert
    every layer's (count, checksum) equal at every Lava step; returns the spike
    counts per layer (and, with ``last``, our last layer's fingerprints). An
    input layer with a neuron counts as a layer (stock: the ``Input`` block)."""
    spec = read_netx(path, skip_input_neuron=skip_input_neuron)
    stream = np.concatenate(list(frames), axis=-1)
    stock = lava_runtime.run_stock_netx(path, stream, reset_interval, skip_layers=int(skip_input_neuron),
                                        input_bias=input_bias, reset_offset=reset_offset)
    ours = lava_runtime.run(spec, frames, reset_interval=reset_interval or 0, input_bias=input_bias,
                            reset_offset=reset_offset)
    names = [l.name for l in spec.layers if l.type in ('conv', 'dense') or l.neuron and l.type == 'input']
    assert len(names) == len(stock)
    counts = []
    for name, out in zip(names, stock):
        expect = np.array([fingerprint(out[..., k]) for k in range(out.shape[-1])])
        assert np.array_equal(expect, ours.fingerprints[name]), name
        counts.append(int(expect[:, 0].sum()))
    return (counts, ours.fingerprints[names[-1]]) if last else counts


def test_dense_chain_with_bias_is_step_identical_to_stock_netx(tmp_path):
    """Biases on the first and last layer (integrated while the pipeline fills);
    graded input values (NetX's default unary input message: non-zero is a spike)."""
    from lava.lib.dl import slayer
    blocks = _init([slayer.block.cuba.Dense(NEURON, 24, 16), slayer.block.cuba.Dense(NEURON, 16, 12),
                    slayer.block.cuba.Dense(NEURON, 12, 6)], seed=1)
    rng = np.random.default_rng(1)
    path = _export(str(tmp_path / 'dense.net'), (24,), blocks,
                   biases={0: rng.integers(-5, 20, 16), 2: rng.integers(0, 30, 6)})
    frames = (rng.random((2, 24, 6)) < 0.4) * rng.integers(1, 4, (2, 24, 6)).astype(float)
    counts = _compare(path, frames, 6)     # graded values: unary spikes for NetX and for us
    assert all(c > 0 for c in counts), counts


@pytest.mark.parametrize('reset', [None, 6])
def test_conv_flatten_dense_is_step_identical_to_stock_netx(tmp_path, reset):
    """5-D conv weights, stride 2 with padding, flatten; with and
    without NetX's reset interval (per-layer reset offsets)."""
    from lava.lib.dl import slayer
    blocks = _init([slayer.block.cuba.Conv(NEURON, 2, 4, 3, padding=1),
                    slayer.block.cuba.Conv(NEURON, 4, 6, 3, stride=2, padding=1),
                    slayer.block.cuba.Flatten(),
                    slayer.block.cuba.Dense(NEURON, 6 * 4 * 4, 10)], seed=2)
    path = _export(str(tmp_path / 'conv.net'), (2, 8, 8), blocks, biases={1: np.arange(6)})
    with h5py.File(path, 'a') as f:      # SLAYER's raw 5-D layout [Co, Ci, kh, kw, 1] (NetX reshapes it)
        w = f['layer/1/weight'][()]
        del f['layer/1/weight']
        f['layer/1/weight'] = w[..., None]
    rng = np.random.default_rng(2)
    frames = (rng.random((2, 2, 8, 8, 6)) < 0.3).astype(float)
    counts = _compare(path, frames, 6, reset_interval=reset)
    assert all(c > 0 for c in counts), counts
    # the readout counts the last layer's spikes of each sample's T steps, lagged by the depth (3)
    spec = read_netx(path)
    res = lava_runtime.run(spec, frames, reset_interval=reset or 0)
    last = lava_runtime.run_stock_netx(path, np.concatenate(list(frames) + [np.zeros((2, 8, 8, 3))], -1), reset)[-1]
    expect = np.stack([last[:, 3 + 6 * s:9 + 6 * s].sum(-1) for s in range(2)])
    assert res.num_steps == 15 and np.array_equal(res.logits, expect)


def test_dense_axonal_delays_are_step_identical_to_stock_netx(tmp_path):
    """SLAYER's per-neuron axonal delays (``delay=True``, 0..5 steps) on two
    dense layers: NetX's ``DelayDense`` (latency 1 + delay), reproduced exactly."""
    from lava.lib.dl import slayer
    blocks = _init([slayer.block.cuba.Dense(NEURON, 16, 8, delay=True),
                    slayer.block.cuba.Dense(NEURON, 8, 6, delay=True)], seed=3, lo=-20, hi=90)
    x = torch.zeros(1, 16, 2)
    for b in blocks:                      # the delay parameters take their shapes in forward
        x = b(x)
    blocks[0].delay.delay.data = torch.arange(8).float().reshape(blocks[0].delay.delay.shape) % 6
    blocks[1].delay.delay.data = torch.tensor([3., 0, 1, 5, 2, 4]).reshape(blocks[1].delay.delay.shape)
    path = _export(str(tmp_path / 'delay.net'), (16,), blocks, biases={1: np.full(6, 3)})
    spec = read_netx(path)
    assert spec.layers[1].params['delay'].max() == 5 and spec.layers[2].params['delay'].shape == (6, 8)
    frames = (np.random.default_rng(3).random((2, 16, 8)) < 0.5).astype(float)
    counts, _ours_last = _compare(path, frames, 8, last=True)
    assert all(c > 0 for c in counts), counts
    for layer in spec.layers:             # the delays matter: without them the spikes differ
        layer.params.pop('delay', None)
    plain = lava_runtime.run(spec, frames)
    assert not np.array_equal(plain.fingerprints['layer2'], _ours_last)
    spec = read_netx(path)
    with pytest.raises(ValueError, match=r"layer 1 \('layer1'\): synaptic delays run in stock NetX timing"):
        lava_runtime.build(spec, frames, timing='sync')
    from lava_dtss.deploy import loihi_build
    with pytest.raises(ValueError, match=r"layer 1 \('layer1'\): --build loihi does not support synaptic delays"):
        loihi_build.plan(spec, 8)


def test_conv_delays_and_delays_beyond_62_are_refused(tmp_path):
    from lava.lib.dl import slayer
    blocks = _init([slayer.block.cuba.Conv(NEURON, 2, 4, 3, delay=True)], seed=4)
    path = _export(str(tmp_path / 'cdelay.net'), (2, 6, 6), blocks)
    with h5py.File(path, 'a') as f:
        del f['layer/1/delay']
        f['layer/1/delay'] = np.arange(4)
    with pytest.raises(NetXFormatError, match=r"layer 1 \(conv\): axonal delays on a conv layer "
                                              r"\(key 'delay', up to 3 steps\) are not supported"):
        read_netx(path)
    dense = _export(str(tmp_path / 'd63.net'), (4,), _init([slayer.block.cuba.Dense(NEURON, 4, 3)], 4))
    with h5py.File(dense, 'a') as f:
        f['layer/1/delay'] = np.array([0, 63, 1])
    with pytest.raises(NetXFormatError, match=r'layer 1 \(dense\): delay values 0..63 outside 0..62'):
        read_netx(dense)


def test_sigma_delta_network_as_lava_dl_exports_it(tmp_path):
    """A whole SDNN network as lava-dl exports it (``sigma_delta`` ``Input``,
    ``Dense``, ``Output``) reads as NetX builds it: the input's Delta encoder,
    SigmaDelta, and the Sigma output. SDNN layers behind an input without
    neuron (a mixed network), ``--skip-input-neuron`` and the variants this
    runtime does not run are refused in one line each."""
    from lava.lib.dl import slayer
    sd = {'threshold': 0.1, 'activation': torch.nn.functional.relu, 'requires_grad': False}
    blocks = [slayer.block.sigma_delta.Dense(sd, 8, 6)]
    path = _export(str(tmp_path / 'sdnn.net'), (8,), blocks)
    with pytest.raises(NetXFormatError, match=r'layer 0 \(input\): a network mixing sigma-delta \(SDNN\) and '
                                              r'CUBA-LIF layers \(or layers without neuron\) is not supported'):
        read_netx(path)
    inp = slayer.block.sigma_delta.Input(sd)
    inp(torch.zeros(1, 8, 2))
    blocks = [slayer.block.sigma_delta.Dense(sd, 8, 6), slayer.block.sigma_delta.Output(sd, 6, 3)]
    path = _export(str(tmp_path / 'sdnn_full.net'), (8,), blocks, input_neuron=inp)
    spec = read_netx(path)
    assert [l.neuron['kind'] for l in spec.layers] == ['delta', 'sigma_delta', 'sigma']
    assert all(l.neuron['type'] == 'SDNN' for l in spec.layers)
    with pytest.raises(NetXFormatError, match=r'layer 0 \(input\): --skip-input-neuron with a sigma-delta'):
        read_netx(path, skip_input_neuron=True)

    def variant(key, value, layer=1, what=None):
        out = str(tmp_path / f'v_{key}.net')
        shutil.copy(path, out)
        with h5py.File(out, 'a') as f:
            g = f[f'layer/{layer}/neuron']
            if key in g:
                del g[key]
            g[key] = value
        with pytest.raises(NetXFormatError, match=what) as e:
            read_netx(out)
        assert '\n' not in str(e.value)
    variant('activation', b'sigmoid', what=r"layer 1 \(dense\): sigma-delta \(SDNN\) activation 'sigmoid' "
                                           r"is not supported")
    variant('messageBits', 8, what=r'neuron/messageBits = 8 is not supported')
    variant('cumError', 1, what=r'neuron key\(s\) neuron/cumError are not supported')
    variant('sigma_output', True, what=r'layer 1 \(dense\): neuron/sigma_output .* on the last layer only')
    variant('vThMant', 1 << 19, what=r'neuron/vThMant = 524288 out of range 0..524287 \(Lava stores it << 12')


def _retype(f, type_name):
    del f['layer/1/type']
    f.create_dataset('layer/1/type', (1,), 'S10', [type_name.encode()])


def _neuron_type(type_name):
    def edit(f):
        del f['layer/1/neuron/type']
        f.create_dataset('layer/1/neuron/type', (1,), 'S10', [type_name.encode()])
    return edit


def _complex_weight(f):
    w = f['layer/1/weight'][()]
    del f['layer/1/weight']
    f['layer/1/weight/real'], f['layer/1/weight/imag'] = w, w


# every other layer and neuron kind stock netx.hdf5.Network knows -> words of the refusal
OTHER_KINDS = {
    'dense_comp': (lambda f: _retype(f, 'dense_comp'), "layer type 'dense_comp' is not supported"),
    'pool': (lambda f: _retype(f, 'pool'), "layer type 'pool' is not supported"),
    'convT': (lambda f: _retype(f, 'convT'), "layer type 'convT' is not supported"),
    'unpool': (lambda f: _retype(f, 'unpool'), "layer type 'unpool' is not supported"),
    'concat': (lambda f: _retype(f, 'concat'), "layer type 'concat' is not supported"),
    'RF': (_neuron_type('RF'), "neuron type 'RF' is not supported"),
    'RF_IZ': (_neuron_type('RF_IZ'), "neuron type 'RF_IZ' is not supported"),
    'complex_weight': (_complex_weight, r"complex weights \(weight/real, weight/imag: NetX's ComplexDense"),
    'no_neuron_type': (lambda f: f.__delitem__('layer/1/neuron/type'), 'missing key neuron/type'),
    'graded_spike': (lambda f: f['layer/1/neuron/gradedSpike'].__setitem__((), True),
                     'graded-spike neurons are not supported'),
    'message_bits': (lambda f: f.__setitem__('layer/1/neuron/messageBits', 8),
                     r'graded output messages \(neuron/messageBits\) are not supported'),
}


@pytest.mark.parametrize('kind', sorted(OTHER_KINDS))
def test_other_stock_layer_and_neuron_kinds_are_refused_by_name(tmp_path, kind):
    """What stock NetX builds (``dense_comp``, RF neurons, complex weights; a
    ``gradedSpike`` flag it ignores) or fails on (``pool``, ``convT``, ``unpool``,
    ``concat``, ``messageBits``, a neuron without type) and this runtime does
    not run: one error naming the layer and the feature."""
    from lava.lib.dl import slayer
    path = _export(str(tmp_path / f'{kind}.net'), (8,), _init([slayer.block.cuba.Dense(NEURON, 8, 6)], 11))
    edit, words = OTHER_KINDS[kind]
    with h5py.File(path, 'a') as f:
        edit(f)
    with pytest.raises(NetXFormatError, match=r'layer 1 \(\w+\): ' + words):
        read_netx(path)


def test_recurrent_dense_from_lava_dl_is_refused_by_name(tmp_path):
    """``slayer.block.cuba.Recurrent`` exports ``dense_rec`` (NetX's RecurrentDense)."""
    from lava.lib.dl import slayer
    path = _export(str(tmp_path / 'rec.net'), (8,), _init([slayer.block.cuba.Recurrent(NEURON, 8, 6)], 12))
    with pytest.raises(NetXFormatError, match=r"layer 1 \(dense_rec\): layer type 'dense_rec' is not "
                                              r'supported by this runtime \(stock NetX runs them\)'):
        read_netx(path)


def test_flat_dense_weight_is_step_identical_to_stock_netx(tmp_path):
    """A dense weight stored flat: NetX reads it as ``[out, -1]``, so do we."""
    from lava.lib.dl import slayer
    blocks = _init([slayer.block.cuba.Dense(NEURON, 12, 8), slayer.block.cuba.Dense(NEURON, 8, 5)], seed=13)
    path = _export(str(tmp_path / 'flat.net'), (12,), blocks)
    with h5py.File(path, 'a') as f:
        w = f['layer/1/weight'][()]
        del f['layer/1/weight']
        f['layer/1/weight'] = w.reshape(-1)
    assert np.array_equal(read_netx(path).layers[1].params['weight'], w)
    frames = (np.random.default_rng(13).random((1, 12, 6)) < 0.5).astype(float)
    counts = _compare(path, frames, 6)
    assert all(c > 0 for c in counts), counts


@pytest.mark.parametrize('kwargs', [{'stride': (1, 2), 'padding': (0, 1)}, {'dilation': 2, 'padding': 1},
                                    {'groups': 2, 'kernel_size': (3, 1), 'stride': (2, 1)}])
def test_odd_conv_geometries_are_step_identical_to_stock_netx(tmp_path, kwargs):
    """Per-axis stride and padding, dilation, groups with a non-square kernel."""
    from lava.lib.dl import slayer
    k = kwargs.pop('kernel_size', 3)
    blocks = _init([slayer.block.cuba.Conv(NEURON, 2, 4, k, **kwargs),
                    slayer.block.cuba.Conv(NEURON, 4, 4, 3, padding=1)], seed=4, lo=-30, hi=100)
    path = _export(str(tmp_path / 'geo.net'), (2, 9, 9), blocks, biases={0: np.arange(4)})
    assert 'geometry' in read_netx(path).layers[1].params
    frames = (np.random.default_rng(4).random((1, 2, 9, 9, 6)) < 0.4).astype(float)
    counts = _compare(path, frames, 6)
    assert all(c > 0 for c in counts), counts
    with pytest.raises(ValueError, match=r"layer 1 \('layer1'\): --build loihi does not support conv geometry"):
        from lava_dtss.deploy import loihi_build
        loihi_build.plan(read_netx(path), 6)


def test_average_layer_is_refused_by_name(tmp_path):
    """lava-dl's own ``cuba.Average.export_hdf5`` fails (it reads a neuron the
    block lacks), so the layer is written with the keys it would write."""
    from lava.lib.dl import slayer
    path = _export(str(tmp_path / 'avg.net'), (8,), _init([slayer.block.cuba.Dense(NEURON, 8, 6)], 5))
    with h5py.File(path, 'a') as f:
        f.create_dataset('layer/2/type', (1,), 'S10', [b'average'])
        f['layer/2/shape'] = np.array([2])
    with pytest.raises(NetXFormatError, match=r"layer 2 \(average\): layer type 'average' is not "
                                              r'supported by this runtime \(stock NetX does not run'):
        read_netx(path)


def test_dense_without_neuron_runs_as_stock_netx_default(tmp_path):
    """A dense layer without ``neuron/``: stock NetX gives it a non-leaky
    integrator whose threshold the 24-bit voltage never reaches (no spikes)."""
    from lava.lib.dl import slayer
    blocks = _init([slayer.block.cuba.Dense(NEURON, 12, 10), slayer.block.cuba.Dense(NEURON, 10, 4)],
                   seed=6, lo=0, hi=127)
    path = _export(str(tmp_path / 'noneuron.net'), (12,), blocks)
    with h5py.File(path, 'a') as f:
        del f['layer/2/neuron']
    assert read_netx(path).layers[2].neuron['vThMant'] == 1 << 17
    frames = (np.random.default_rng(6).random((1, 12, 6)) < 0.5).astype(float)
    counts = _compare(path, frames, 6)
    assert counts[0] > 0 and counts[1] == 0


def test_stock_input_is_round_of_input_scale_times_pixel(tmp_path):
    """A stock file has no ``dtss/inputScale`` (read as 1): pixels in [0, 1] are
    sent as ``round(1 * x)``, never as fractions."""
    from lava.lib.dl import slayer
    from lava_dtss.deploy.reference import direct_images
    path = _export(str(tmp_path / 'scale.net'), (8,), _init([slayer.block.cuba.Dense(NEURON, 8, 6)], 14))
    assert read_netx(path).layers[0].params['inputScale'] == 1
    x = torch.tensor([[[[0.0, 0.3, 0.5, 0.51, 1.0]]]])
    assert direct_images(x, 1).tolist() == [[[[0.0, 0.0, 0.0, 1.0, 1.0]]]]
    assert direct_images(x, 255).tolist() == [[[[0.0, 77.0, 128.0, 130.0, 255.0]]]]


@pytest.mark.parametrize('reset', [None, 3])
def test_input_neuron_is_step_identical_to_stock_netx_input_block(tmp_path, reset):
    """SLAYER's ``Input`` block (a neuron) exported by lava-dl runs as stock
    NetX's ``Input`` block: data into the neuron (fractions truncated as Lava's
    integer ``a_in``, negative values too) and a per-neuron bias; with a reset
    interval and offset (the input neuron is NetX's block 0). With
    ``skip_input_neuron`` identical to stock ``Network(skip_layers=1)``."""
    from lava.lib.dl import slayer
    inp = slayer.block.cuba.Input(NEURON)
    blocks = _init([slayer.block.cuba.Conv(NEURON, 2, 4, 3, padding=1), slayer.block.cuba.Flatten(),
                    slayer.block.cuba.Dense(NEURON, 4 * 6 * 6, 5)], seed=7)
    inp(torch.zeros(1, 2, 6, 6, 2))
    path = _export(str(tmp_path / 'inp.net'), (2, 6, 6), blocks, input_neuron=inp)
    assert read_netx(path).layers[0].neuron['vThMant'] == 32
    rng = np.random.default_rng(7)
    frames = rng.integers(-4, 30, (2, 2, 6, 6, 6)) + rng.random((2, 2, 6, 6, 6))
    bias = rng.integers(-2, 12, (2, 6, 6))
    counts = _compare(path, frames, 6, reset_interval=reset, input_bias=bias, reset_offset=1 if reset else 0)
    assert all(c > 0 for c in counts), counts
    spikes = (rng.random((1, 2, 6, 6, 6)) < 0.4).astype(float)
    counts = _compare(path, spikes, 6, reset_interval=reset, skip_input_neuron=True)
    assert all(c > 0 for c in counts), counts


def test_general_conv_equals_torch():
    from lava_dtss.fixed_point import conv2d_general
    rng = np.random.default_rng(8)
    a = rng.integers(0, 3, (2, 4, 7, 9)).astype(float)
    w = rng.integers(-9, 9, (6, 2, 3, 2)).astype(float)
    ours = conv2d_general(a, w, (2, 1), (1, 2), (1, 3), 2)
    ref = torch.nn.functional.conv2d(torch.from_numpy(a), torch.from_numpy(w), stride=(2, 1),
                                     padding=(1, 2), dilation=(1, 3), groups=2).numpy()
    assert np.array_equal(ours, ref)


def test_stock_only_features_are_refused_in_our_own_format(tmp_path):
    """Our export never writes delays, odd conv geometries or neuron-less dense
    layers; a lava-dtss file holding one is refused (the training-side reference
    could not reproduce it)."""
    from lava.lib.dl import slayer
    path = _export(str(tmp_path / 'own.net'), (8,), _init([slayer.block.cuba.Dense(NEURON, 8, 6)], 9))
    with h5py.File(path, 'a') as f:
        f['meta/format'] = 'lava-dtss-netx/1'
        f['layer/1/delay'] = np.full(6, 2)
    with pytest.raises(NetXFormatError, match=r"layer 1 \(dense 'layer1'\): synaptic delays in a "
                                              r'lava-dtss-netx/1 file'):
        read_netx(path)


def test_run_lava_cli_on_a_stock_file_with_input_neuron(tmp_path, capsys):
    """run_lava.py (in-process; its ``__main__`` prints these errors as one
    line) on a lava-dl export (digits, 1x8x8, input neuron): runs with the
    input neuron (the images into it) and with --skip-input-neuron,
    --reset-interval; --batch 2 is refused in stock timing."""
    import importlib.util
    import json
    import os
    from lava.lib.dl import slayer
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location('run_lava', os.path.join(root, 'scripts', 'run_lava.py'))
    run_lava = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_lava)
    inp = slayer.block.cuba.Input(NEURON)
    inp(torch.zeros(1, 1, 8, 8, 2))
    blocks = _init([slayer.block.cuba.Conv(NEURON, 1, 4, 3, stride=2, padding=1), slayer.block.cuba.Flatten(),
                    slayer.block.cuba.Dense(NEURON, 64, 10)], seed=10)
    path = _export(str(tmp_path / 'digits.net'), (1, 8, 8), blocks, input_neuron=inp)
    base = ['--model', path, '--dataset', 'digits', '--num-samples', '2', '--t-max', '4']
    out = tmp_path / 'r.json'
    assert run_lava.main(base + ['--gated-only', '--json', str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report['layers']) == ['layer0', 'layer1', 'layer3'] and report['lava_steps'] == 2 * 4 + 2
    assert run_lava.main(base + ['--skip-input-neuron', '--reset-interval', '4', '--gated-only',
                                 '--json', str(out)]) == 0
    report = json.loads(out.read_text())
    assert report['lava_steps'] == 2 * 4 + 2 and report['batch'] == 1
    with pytest.raises(ValueError, match='stock NetX timing runs one sample stream'):
        run_lava.main(base + ['--skip-input-neuron', '--batch', '2'])
