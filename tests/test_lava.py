"""Export -> NetX HDF5 -> Lava: bit-exact with training-side inference,
stock-NetX compatible, gating saves what the active steps predict."""
import os

import numpy as np
import pytest
import torch

from lava_dtss.deploy import lava_runtime
from lava_dtss.deploy.export import conv_spec, dense_spec, deployed_model, export_hdf5
from lava_dtss.fixed_point import fingerprint
from lava_dtss.deploy.netx_file import LayerSpec, NetSpec, read_netx, write_netx
from lava_dtss.deploy.reference import direct_frames, float32_is_exact, reference_run
from lava_dtss.model import build_model
from lava_dtss.training import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, 'netx_models', 'digits_tiny_dtss.net')


@pytest.fixture(scope='module')
def shipped():
    spec = read_netx(SHIPPED)
    images = data.load_dataset('digits', 'test').tensors[0][:6]
    frames = direct_frames(images, spec.t_max, spec.layers[0].params['inputScale'])
    gated = lava_runtime.run(spec, frames, gating=True)
    ungated = lava_runtime.run(spec, frames, gating=False)
    return spec, images, gated, ungated


def test_shipped_model_in_lava_equals_training_side_inference(shipped):
    spec, images, gated, _ = shipped
    ref_logits, ref_fps = reference_run(spec, images)
    assert set(ref_fps) == set(gated.fingerprints)
    for name, fp in ref_fps.items():
        assert np.array_equal(fp, gated.fingerprints[name]), name
    assert sum(int(fp[:, 0].sum()) for fp in ref_fps.values()) > 0   # spikes happen
    assert np.array_equal(ref_logits, gated.logits)
    assert np.array_equal(ref_logits.argmax(1), gated.predictions)


def test_float32_reference_only_where_exact_and_equal_to_float64():
    """The reference runs in float32 only where the file's integers bound every
    sum and state below 2**24; there it equals the float64 model bit for bit."""
    import copy
    spec = read_netx(SHIPPED)
    assert float32_is_exact(spec)
    images = data.load_dataset('digits', 'test').tensors[0][:32]
    with torch.no_grad():
        a, sa = deployed_model(spec, torch.float32).forward_with_spikes(images)
        b, sb = deployed_model(spec, torch.float64).forward_with_spikes(images)
    assert a.dtype == b.dtype == torch.float64 and torch.equal(a, b)
    assert all(torch.equal(sa[n].double(), sb[n]) for n in sb) and sum(int(s.sum()) for s in sb.values()) > 0
    # vThMant 2**18: its spike level (vThMant << 6) + 1 is past 2**24 (float32 would round it)
    for change in ({'inputScale': 1e9}, {'iDecay': 0}, {'vDecay': 0}, {'vThMant': 1 << 18}):
        bad = copy.deepcopy(spec)
        target = bad.layers[0] if 'inputScale' in change else next(l for l in bad.layers if l.type == 'conv')
        (target.params if 'inputScale' in change else target.neuron).update(change)
        assert not float32_is_exact(bad), change


def test_gating_changes_no_spike_and_saves_predicted_operations(shipped):
    spec, images, gated, ungated = shipped
    s, t_max = images.shape[0], spec.t_max
    for layer in spec.layers:
        if layer.name not in gated.synops:
            continue
        assert np.array_equal(gated.fingerprints[layer.name], ungated.fingerprints[layer.name])
        neurons = int(np.prod(layer.shape))
        assert gated.neuron_updates[layer.name] == neurons * layer.active_steps * s
        assert ungated.neuron_updates[layer.name] == neurons * t_max * s
        assert gated.synops[layer.name] <= ungated.synops[layer.name]
        if gated.input_analog[layer.name]:   # constant direct-encoded input: ops scale with T_l
            assert gated.synops[layer.name] * t_max == ungated.synops[layer.name] * layer.active_steps
    assert np.array_equal(gated.logits, ungated.logits)
    assert sum(gated.neuron_updates.values()) < sum(ungated.neuron_updates.values())


def test_export_roundtrip_of_a_fresh_model(tmp_path):
    torch.manual_seed(1)
    model = build_model('tiny')
    model.eval()
    path = tmp_path / 'm.net'
    export_hdf5(model, str(path), dataset='digits')
    spec = read_netx(str(path))
    assert spec.meta['format'] == 'lava-dtss-netx/1'
    names = [l.name for l in spec.layers]
    assert names[0] == 'input' and names[-1] == 'head'
    for layer in spec.layers:
        if layer.type == 'conv':
            w = layer.params['weight']
            assert w.dtype.kind == 'i' and np.abs(w).max() <= 127
            assert layer.active_steps == 4 and layer.neuron['vThMant'] > 0
    deployed = deployed_model(spec)
    x = torch.rand(3, 1, 8, 8)
    float_logits = model(x)
    assert deployed(x.double()).shape == float_logits.shape


def _sequential_net(rng):
    neuron = {'type': 'CUBA', 'iDecay': 4096, 'vDecay': 2048, 'vThMant': 80, 'refDelay': 1,
              'gradedSpike': False}
    return NetSpec([
        LayerSpec(type='input', name='input', shape=(2, 8, 8)),
        conv_spec('c1', rng.integers(-60, 80, (4, 2, 3, 3)), np.zeros(4, int), (4, 8, 8), neuron, 1, 1),
        conv_spec('c2', rng.integers(-60, 80, (8, 4, 3, 3)), np.zeros(8, int), (8, 4, 4), neuron, 2, 1),
        LayerSpec(type='flatten', name='flatten', shape=()),
        dense_spec('d', rng.integers(-50, 80, (10, 128)), np.zeros(10, int), neuron)])


def test_sequential_export_loads_in_stock_netx_and_runs_identically(tmp_path):
    """Stock NetX adds one step of synaptic latency per layer; our runtime is
    layer-synchronous, so stock output at step t + depth equals ours at t; in
    stock timing (the default for a file without ``meta/format``) ours equals
    stock at every step."""
    from lava.lib.dl import netx
    rng = np.random.default_rng(0)
    path = str(tmp_path / 'seq.net')
    write_netx(_sequential_net(rng), path)
    t_max, depth = 6, 3
    frames = (rng.random((1, 2, 8, 8, t_max)) < 0.4).astype(float)
    ours = lava_runtime.run(read_netx(path), frames, timing='sync')
    padded = np.concatenate([frames, np.zeros(frames.shape[:-1] + (depth,))], -1)
    piped = lava_runtime.run(read_netx(path), padded)      # a file without meta/format: stock timing

    assert len(netx.hdf5.Network(net_config=path).layers) == 3
    steps = t_max + depth
    outs = lava_runtime.run_stock_netx(path, padded[0])    # every layer, (C, H, W) order
    for d, (name, out) in enumerate(zip(['c1', 'c2', 'd'], outs), start=1):
        stock = np.array([fingerprint(out[..., t + d]) for t in range(t_max)])
        assert stock[:, 0].sum() > 0
        assert np.array_equal(stock, ours.fingerprints[name]), name
        every_step = np.array([fingerprint(out[..., k]) for k in range(steps)])
        assert np.array_equal(every_step, piped.fingerprints[name]), name


def test_training_side_operation_counts_equal_the_lava_runs(shipped):
    """OperationCounter (what the study's energy figures use) counts exactly
    what the gated and the ungated Lava processes executed."""
    from lava_dtss.analysis.operations import OperationCounter
    spec, images, gated, ungated = shipped
    model = deployed_model(spec)
    for gating, res in ((True, gated), (False, ungated)):
        with OperationCounter(model, gating=gating) as ops:
            model(images.double())
        assert ops.samples == images.shape[0]
        assert ops.synops == res.synops
        assert ops.neuron_updates == res.neuron_updates
    assert sum(gated.synops.values()) < sum(ungated.synops.values())


# (iDecay, vDecay) of the three Lava LIF processes: the ViT's neuron, general decays, and a current
# that barely decays into a voltage that never does (integrate-and-fire: the most overflow)
LIF_DECAYS = [(4096, 2048), (1234, 4000), (1, 0)]


def test_lif_step_is_lavas_bit_accurate_lif():
    """``lava_dtss.loihi2.lif_step`` against Lava's own ``PyLifModelBitAcc``
    (``LIF`` under ``Loihi2SimCfg(select_tag='fixed_pt')``, du = iDecay - 1 and
    bias_exp 6 as NetX maps a file): u, v and spikes after every step, on random
    13-bit biases, random initial states across the 24-bit range and random
    inputs up to 2**18.5 (the current wraps, the voltage clips), plus neurons
    whose voltage lands exactly on the threshold (no spike). ``lif_step`` runs in
    place on rows of one state array, with float32, float64 and int64 inputs, as
    the process models call it."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.models import PyLifModelBitAcc
    from lava.proc.lif.process import LIF
    from lava_dtss.loihi2 import (ACT_SHIFT, BIAS_EXP, CURRENT_DECAY_OFFSET, MAX_BIAS, MAX_UV, MIN_BIAS,
                                  apply_decay, lif_step)
    rng = np.random.default_rng(7)
    n, steps, vth, exact = 96, 12, 1000, 16          # the first `exact` neurons land on the threshold
    bias = rng.integers(MIN_BIAS, MAX_BIAS + 1, n)
    bias[:exact] = rng.integers(-300, 300, exact)
    scale = np.repeat([600, 30000, 300000, 380000], n // 4)[rng.permutation(n)]
    a_in = np.round(rng.normal(0, 1, (n, steps)) * scale[:, None]).astype(np.int64)
    # exact neurons, from zero state: v = (a + bias) << 6 = vth << 6 at step 1 (no spike); with
    # iDecay 4096 (no current memory) a spike (a + 1) then resets v and the next step lands again
    a_in[:exact] = (vth - bias[:exact])[:, None] + (np.arange(steps) % 2)[None, :]
    u0 = rng.integers(-MAX_UV + 1, MAX_UV, (len(LIF_DECAYS), n))
    v0 = rng.integers(-MAX_UV + 1, MAX_UV, (len(LIF_DECAYS), n))
    u0[:, :exact] = v0[:, :exact] = 0
    src = Source(data=a_in.astype(np.int32))
    lifs, sinks = [], []
    for k, (i_decay, v_decay) in enumerate(LIF_DECAYS):
        lif = LIF(shape=(n,), du=i_decay - CURRENT_DECAY_OFFSET, dv=v_decay, vth=vth, bias_mant=bias,
                  bias_exp=BIAS_EXP, u=u0[k], v=v0[k], name=f'lif{k}')
        sink = Sink(shape=(n,), buffer=steps)
        src.s_out.connect(lif.a_in)
        lif.s_out.connect(sink.a_in)
        lifs.append(lif)
        sinks.append(sink)
    u, v = u0.copy(), v0.copy()
    ours = np.zeros((len(LIF_DECAYS), n, steps), bool)
    seen = {'wrapped': 0, 'clipped': 0, 'on threshold': 0}
    try:
        for t in range(steps):
            src.run(condition=RunSteps(num_steps=1), run_cfg=Loihi2SimCfg(select_tag='fixed_pt'))
            assert all(lif.model_class is PyLifModelBitAcc for lif in lifs)
            for k, (i_decay, v_decay) in enumerate(LIF_DECAYS):
                tmp = np.empty(n, np.int64)
                raw_u, raw_v = u[k].copy(), v[k].copy()
                apply_decay(raw_u, i_decay, tmp)
                apply_decay(raw_v, v_decay, tmp)
                raw_u += a_in[:, t] << ACT_SHIFT
                x = a_in[:, t].astype((np.float32, np.float64, np.int64)[k])
                ours[k, :, t] = lif_step(u[k], v[k], x, bias, i_decay, v_decay, vth)   # in place, a row
                raw_v += u[k] + (bias << BIAS_EXP)
                seen['wrapped'] += int(np.sum((raw_u > MAX_UV) | (raw_u <= -MAX_UV)))
                seen['clipped'] += int(np.sum(np.abs(raw_v) >= MAX_UV))
                seen['on threshold'] += int(np.sum(raw_v == vth << ACT_SHIFT))
                assert np.array_equal(lifs[k].u.get(), u[k]), (LIF_DECAYS[k], t)
                assert np.array_equal(lifs[k].v.get(), v[k]), (LIF_DECAYS[k], t)
        lava_spikes = [sink.data.get() for sink in sinks]
    finally:
        src.stop()
    for k in range(len(LIF_DECAYS)):
        assert np.array_equal(lava_spikes[k], ours[k]), LIF_DECAYS[k]
    assert ours.any() and not ours.all()
    assert ours[0, :exact, 0].sum() == 0 and ours[0, :exact, 1].all()   # at the threshold: no spike
    assert min(seen.values()) > 10, seen


def test_batched_conv_and_fingerprints_match_torch_and_per_sample():
    from lava_dtss.fixed_point import conv2d, fingerprint_rows
    rng = np.random.default_rng(3)
    for b, ci, h, co, k, stride, pad in [(3, 4, 9, 5, 3, 1, 1), (3, 4, 9, 5, 3, 2, 1),
                                         (2, 6, 7, 8, 1, 1, 0), (2, 1, 28, 16, 3, 1, 1)]:
        a = rng.integers(0, 256, (b, ci, h, h)).astype(float)
        w = rng.integers(-127, 128, (co, ci, k, k)).astype(float)
        ref = torch.nn.functional.conv2d(torch.tensor(a), torch.tensor(w), stride=stride,
                                         padding=pad).numpy()
        for dtype in (np.float64, np.float32):   # float32: partial sums below 2**24 here
            assert np.array_equal(conv2d(a, w, stride, pad, dtype), ref)
        assert np.array_equal(conv2d(a[0], w, stride, pad), ref[0])
    spikes = rng.random((4, 3, 5, 5)) < 0.3
    assert [tuple(r) for r in fingerprint_rows(spikes)] == [fingerprint(x) for x in spikes]


@pytest.fixture(scope='module')
def batched():
    """The shipped model on 7 samples: one per window, and 3 side by side (3
    windows, the last padded with 2 empty rows), gated and ungated."""
    spec = read_netx(SHIPPED)
    images = data.load_dataset('digits', 'test').tensors[0][6:13]
    frames = direct_frames(images, spec.t_max, spec.layers[0].params['inputScale'])
    runs = {}
    for gating in (True, False):
        runs[1, gating] = lava_runtime.run(spec, frames, gating=gating, batch=1)
        # frames without a time axis: the direct encoding shows each for T_max steps
        runs[3, gating] = lava_runtime.run(spec, frames[..., 0], gating=gating, batch=3)
    return spec, images, runs


@pytest.mark.parametrize('gating', [True, False])
def test_batched_run_equals_one_sample_per_window_and_reference(batched, gating):
    spec, images, runs = batched
    one, three = runs[1, gating], runs[3, gating]
    assert (one.batch, three.batch) == (1, 3)
    assert (one.num_steps, three.num_steps) == (7 * spec.t_max, 3 * spec.t_max)
    ref_logits, ref_fps = reference_run(spec, images)
    for res in (one, three):
        assert np.array_equal(res.logits, ref_logits)
        assert set(res.fingerprints) == set(ref_fps)
        for name, fp in ref_fps.items():
            assert fp.shape == (7 * spec.t_max, 2)
            assert np.array_equal(res.fingerprints[name], fp), name
    # counted operations: padded rows are neither computed nor counted
    assert three.synops == one.synops and three.neuron_updates == one.neuron_updates
    assert sum(one.synops.values()) > 0
    for layer in spec.layers:
        if layer.name in one.neuron_updates:
            steps = layer.active_steps if gating else spec.t_max
            assert three.neuron_updates[layer.name] == 7 * steps * int(np.prod(layer.shape))
    assert three.memory['total'] > 0 and three.memory['states'] == 3 * one.memory['states']


def test_batched_gating_saves_the_same_operations(batched):
    _, _, runs = batched
    for b in (1, 3):
        gated, ungated = runs[b, True], runs[b, False]
        assert all(np.array_equal(gated.fingerprints[n], ungated.fingerprints[n])
                   for n in gated.fingerprints)
        assert sum(gated.neuron_updates.values()) < sum(ungated.neuron_updates.values())


def test_bad_batch_or_frames_are_refused():
    spec = read_netx(SHIPPED)
    frames = np.zeros((2, 1, 8, 8))
    for batch in (0, -1):
        with pytest.raises(ValueError, match='batch must be >= 1'):
            lava_runtime.build(spec, frames, batch=batch)
    with pytest.raises(ValueError, match='expected'):
        lava_runtime.build(spec, np.zeros((2, 8, 8)))


def test_sigma_delta_step_is_lavas_fixed_point_sigma_delta():
    """``lava_dtss.loihi2.sigma_delta_step`` against Lava's own fixed-point
    ``SigmaDelta``, ``Delta`` and ``Sigma`` (``Loihi2SimCfg(select_tag='fixed_pt')``,
    spike_exp 6 and state_exp 6 as NetX builds an SDNN file): the messages of
    every step and the final sigma, act and residue, on random signed inputs and
    biases, thresholds 0, 3 and 40 (deltas below, on and above them; the
    activation clipped at 0 by ReLU)."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.sdn.process import Delta, Sigma, SigmaDelta
    from lava_dtss.loihi2 import SDNN_SPIKE_EXP, SDNN_STATE_EXP, sigma_delta_step
    rng = np.random.default_rng(3)
    n, steps = 64, 10
    a_in = (rng.integers(-300000, 300000, (n, steps)) * (rng.random((n, steps)) < 0.6)).astype(np.int32)
    a_in[:8, 1:] = 0                                     # held input: the residue decides
    small = rng.integers(-90, 90, (n, steps)).astype(np.int32)   # a Delta encoder's pixels
    bias = rng.integers(-60, 60, n)
    exps = dict(spike_exp=SDNN_SPIKE_EXP, state_exp=SDNN_STATE_EXP)
    procs = [('sigma_delta', vth, SigmaDelta(shape=(n,), vth=vth, bias=bias, **exps), a_in) for vth in (0, 3, 40)]
    procs += [('delta', vth, Delta(shape=(n,), vth=vth, **exps), small) for vth in (0, 3, 40)]
    procs += [('sigma', 0, Sigma(shape=(n,)), a_in)]
    sources = {id(d): Source(data=d) for d in (a_in, small)}     # two graphs, one source each
    sinks = []
    for kind, vth, proc, data in procs:
        sink = Sink(shape=(n,), buffer=steps)
        sources[id(data)].s_out.connect(proc.a_in)
        proc.s_out.connect(sink.a_in)
        sinks.append(sink)
    try:
        for src in sources.values():
            src.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag='fixed_pt'))
        lava = [sink.data.get() for sink in sinks]
        states = [(p.sigma.get(), p.act.get() if kind != 'sigma' else None,
                   p.residue.get() if kind != 'sigma' else None) for kind, _, p, _ in procs]
    finally:
        for src in sources.values():
            src.stop()
    for (kind, vth, _, data), got, (sigma_l, act_l, res_l) in zip(procs, lava, states):
        sigma, act, res = (np.zeros(n, np.int64) for _ in range(3))
        ours = np.stack([sigma_delta_step(sigma, act, res, data[:, t], bias, vth, kind)
                         for t in range(steps)], axis=1)
        assert np.array_equal(ours, got), (kind, vth, int(np.abs(ours - got).sum()))
        assert (ours != 0).any() and (kind == 'sigma' or vth == 0 or (ours == 0).any())
        if kind == 'sigma_delta':
            assert np.array_equal(sigma, sigma_l) and np.array_equal(act, act_l) and np.array_equal(res, res_l)
