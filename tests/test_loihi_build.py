"""The standard-process (Loihi 2) build: on the CPU simulator
(``Loihi2SimCfg(select_tag='fixed_pt')``) every layer's spikes equal the fused
runtime's after the layer's pipeline offset, and the logits are identical."""
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from lava_dtss.deploy import lava_runtime, loihi_build
from lava_dtss.deploy.export import conv_spec, dense_spec
from lava_dtss.deploy.netx_file import FORMAT, LayerSpec, NetSpec, read_netx, write_netx
from lava_dtss.deploy.reference import direct_images
from lava_dtss.loihi2 import reset_interval
from lava_dtss.training import data
from script_loader import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, 'netx_models', 'digits_tiny_dtss.net')
NEURON = {'type': 'CUBA', 'iDecay': 4096, 'vDecay': 2048, 'vThMant': 80}


def _small_net(path, rng, t_max=6):
    """conv 3x3 -> conv 3x3 stride 2 -> flatten -> dense d1 -> dense d2 -> dense d3 fed
    by d2 AND d1 (a skip one step short: DelayDense); graded input;
    T_max = 6 (not a power of two); every layer gated at a different step."""
    spec = NetSpec([
        LayerSpec(type='input', name='input', shape=(2, 8, 8), params={'inputScale': 3}),
        conv_spec('c1', rng.integers(-40, 60, (4, 2, 3, 3)), rng.integers(-20, 40, 4), (4, 8, 8),
                  NEURON, 1, 1, inputs=[0], active_steps=3),
        conv_spec('c2', rng.integers(-60, 80, (8, 4, 3, 3)), rng.integers(-20, 40, 8), (8, 4, 4),
                  NEURON, 2, 1, inputs=[1], active_steps=5),
        LayerSpec(type='flatten', name='flatten', shape=(), inputs=[2]),
        dense_spec('d1', rng.integers(-50, 80, (32, 128)), rng.integers(-10, 30, 32), NEURON,
                   inputs=[3], active_steps=4),
        dense_spec('d2', rng.integers(-50, 80, (32, 32)), rng.integers(-10, 30, 32), NEURON,
                   inputs=[4], active_steps=5),
        dense_spec('d3', rng.integers(-50, 80, (10, 32)), np.zeros(10, int), NEURON,
                   inputs=[5, 4], active_steps=6)],
        meta={'t_max': t_max, 'format': FORMAT})
    write_netx(spec, path)
    return read_netx(path)


@pytest.fixture(scope='module')
def small(tmp_path_factory):
    rng = np.random.default_rng(7)
    spec = _small_net(str(tmp_path_factory.mktemp('loihi') / 'small.net'), rng)
    frames = rng.integers(0, 4, (3, 2, 8, 8)).astype(float)      # graded 2-bit pixels
    fused = lava_runtime.run(spec, frames, t_max=6)
    loihi = loihi_build.run(spec, frames, t_max=6)
    return spec, frames, fused, loihi


def test_small_conv_dense_network_is_spike_identical(small):
    spec, _, fused, loihi = small
    p = loihi_build.plan(spec, 6, input_max=3)
    assert p.period == 8 and loihi.period == 8                   # T_max 6 padded to 8
    assert loihi.offsets == {'input': 0, 'c1': 1, 'c2': 2, 'd1': 3, 'd2': 4, 'd3': 5}
    assert [(e.delay, e.via) for e in p.stages[6].edges] == [(0, ''), (1, 'DelayDense')]
    assert loihi.num_steps == 3 * 8 + 5
    assert set(loihi.fingerprints) == set(fused.fingerprints) == {'c1', 'c2', 'd1', 'd2', 'd3'}
    for name, fp in fused.fingerprints.items():
        assert fp[:, 0].sum() > 0, name                           # every layer spikes
        assert np.array_equal(loihi.fingerprints[name], fp), name
    assert np.array_equal(loihi.logits, fused.logits)
    assert np.array_equal(loihi.predictions, fused.predictions)


def test_dtss_gate_is_what_silences_the_layers(small):
    """Without the timer and gate neurons the layers keep spiking after their
    active steps (so the spike equality above depends on the gate)."""
    spec, frames, fused, _ = small
    ungated = loihi_build.run(spec, frames, t_max=6, gating=False)
    for layer in spec.layers:
        if layer.name not in fused.fingerprints:
            continue
        steps = fused.fingerprints[layer.name].reshape(3, 6, 2)
        assert steps[:, layer.active_steps:, 0].sum() == 0        # gated off in the fused run
    late = ungated.fingerprints['c1'].reshape(3, 6, 2)[:, 3:, 0]
    assert late.sum() > 0
    early = ungated.fingerprints['c1'].reshape(3, 6, 2)[:, :3]
    assert np.array_equal(early, fused.fingerprints['c1'].reshape(3, 6, 2)[:, :3])


def test_shipped_digits_model_is_spike_identical_with_hybrid_attention():
    spec = read_netx(SHIPPED)
    images = data.load_dataset('digits', 'test').tensors[0][:3]
    frames = direct_images(images, spec.layers[0].params['inputScale'])
    fused = lava_runtime.run(spec, frames)
    loihi = loihi_build.run(spec, frames)
    assert loihi.offsets['blocks.0.ssa.attn'] == loihi.offsets['blocks.0.ssa.q'] == 4
    assert loihi.offsets['blocks.0.mlp.fc2'] == 7
    assert set(loihi.fingerprints) == set(fused.fingerprints)
    for name, fp in fused.fingerprints.items():
        assert np.array_equal(loihi.fingerprints[name], fp), name
    assert sum(int(fp[:, 0].sum()) for fp in fused.fingerprints.values()) > 0
    assert np.array_equal(loihi.logits, fused.logits)
    assert np.array_equal(loihi.predictions, fused.predictions)


def test_plan_offsets_delays_and_gate_phases():
    spec = read_netx(SHIPPED)
    p = loihi_build.plan(spec, 8)
    offsets = [p.stages[i].offset for i in range(1, 11)]
    assert offsets == [1, 2, 3, 4, 4, 4, 4, 5, 6, 7]
    assert p.relays == {2: 3, 3: 2}                              # sps.1 +3, rpe +2 to reach fc1
    fc1 = p.stages[9]
    assert [(e.src, e.delay) for e in fc1.edges] == [(2, 3), (3, 2), (8, 0)]
    for st in p.gated:   # timer phase q fires at g' with (g'-1) % P == q; its gate at g'+1,
        inhibited = set()  # the inhibition reaches the layer at g'+2: window step (g'+1-off) % P
        for g1 in range(1, 4 * p.period):
            if (g1 - 1) % p.period in st.gate[3]:
                inhibited.add((g1 + 1 - st.offset) % p.period)
        assert inhibited == set(range(st.active_steps, p.period)), st.name
    assert loihi_build.plan(spec, 5).period == 8 and reset_interval(8) == 8
    rows = loihi_build.resources(p)
    chip = [r for r in rows if r['where'] == 'chip']
    layer_neurons = sum(int(np.prod(l.shape)) for l in spec.layers
                        if l.type in ('conv', 'dense'))
    relays = 3 * 512 + 2 * 512
    gates = p.period + len(p.gated)
    assert sum(r['neurons'] for r in chip) == layer_neurons + relays + gates
    attn = [r for r in rows if r['name'] == 'blocks.0.ssa.attn'][0]
    assert attn['where'] == 'host' and attn['traffic'] == 4 * 512


def test_gate_by_inhibition_needs_a_current_without_memory_the_relay_gate_does_not(tmp_path):
    """A gated layer whose current decays slowly cannot be silenced by inhibition
    (it would accumulate): forcing ``gate='inhibit'`` is one clear error; the
    default picks the relay gate for that layer only."""
    rng = np.random.default_rng(1)
    spec = _small_net(str(tmp_path / 's.net'), rng)
    spec.layers[1].neuron = dict(NEURON, iDecay=1024)
    with pytest.raises(ValueError, match=r"layer 1 \(conv 'c1'\).*iDecay = 4096.*relay gate has no such limit"):
        loihi_build.plan(spec, 6, gate='inhibit')
    p = loihi_build.plan(spec, 6)
    assert {s.name: s.gate_mode for s in p.gated} == {'c1': 'relay', 'c2': 'inhibit', 'd1': 'inhibit',
                                                        'd2': 'inhibit', 'd3': 'inhibit'}
    assert p.stages[1].out_offset == 2 and p.stages[2].offset == 3      # the relay adds one step
    with pytest.raises(ValueError, match="gate 'bogus': expected one of auto, inhibit, relay"):
        loihi_build.plan(spec, 6, gate='bogus')


def test_relay_gate_is_spike_identical_and_its_phases_cover_the_gated_steps(small):
    """Every gated layer silenced by a relay stage (one neuron per output, inhibited
    by the gate with weight -1, one step later): the same spikes and logits as the
    fused runtime, every layer's output one step later per relay on its path."""
    spec, frames, fused, _ = small
    res = loihi_build.run(spec, frames, t_max=6, gate='relay', lava_conv=True)   # lava-nc's own Conv model
    assert res.offsets == {'input': 0, 'c1': 2, 'c2': 4, 'd1': 6, 'd2': 8, 'd3': 10}
    for name, fp in fused.fingerprints.items():
        assert np.array_equal(res.fingerprints[name], fp), name
    assert np.array_equal(res.logits, fused.logits)
    p = res.plan
    for st in p.gated:   # the relay's neurons (offset off + 1) are inhibited at window steps T_l..P-1
        inhibited = {(g1 + 1 - st.out_offset) % p.period for g1 in range(1, 4 * p.period)
                     if (g1 - 1) % p.period in st.gate[3]}
        assert st.gate_mode == 'relay' and st.gate[:3] == (1, 1, 0)
        assert inhibited == set(range(st.active_steps, p.period)), st.name


def test_cli_maps_a_gated_layer_with_current_memory_through_a_relay_gate(tmp_path):
    """iDecay != 4096 on a gated layer (refused before the relay gate existed):
    ``--check-loihi --build loihi`` reports a relay stage after that layer, one
    step and 2 synapses per neuron, and the rest of the network unchanged."""
    path = str(tmp_path / 'idecay.net')
    shutil.copy(SHIPPED, path)
    with h5py.File(path, 'r+') as f:   # a current that keeps 27% per step (1024 would keep 75%: x4 the
        f['layer/1/neuron/iDecay'][()] = 3000   # worst-case input, past 24 bits on the shipped model's stem)
    r = _cli('--model', path, '--check-loihi', '--build', 'loihi')
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line.split()}
    assert rows['sps.0.gate'][1:5] == ['chip', '1024', '2048', '2048'], rows['sps.0.gate']
    assert 'gate: relay stage sps.0.gate' in ' '.join(rows['sps.0'])
    assert 'inhibited' in ' '.join(rows['sps.1'])


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'run_lava.py'), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_resource_report_and_loihi2_dry_run():
    r = _cli('--check-loihi', '--build', 'loihi')
    assert r.returncode == 0, r.stderr
    assert 'dtss.timer+gates' in r.stdout and 'sps.1.relay' in r.stdout
    assert 'host <-> chip' in r.stdout and 'cores' in r.stdout
    from lava.utils import loihi
    if loihi.is_installed():
        pytest.skip('lava-loihi is installed here: the loihi2 backend would really run')
    r = _cli('--backend', 'loihi2', '--build', 'loihi', '--num-samples', '2')
    assert r.returncode == 3
    assert 'Loihi2HwCfg' in r.stdout and 'reset_interval=8' in r.stdout
    assert r.stderr.strip().splitlines()[-1].startswith('error: the Loihi 2 backend needs lava-loihi')
    r = _cli('--build', 'loihi', '--batch', '4')
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith('error: --build loihi')


def test_bias_beyond_13_bits_runs_at_bias_exp_7_spike_identical(tmp_path):
    """A layer whose (even) file biases exceed the 13-bit mantissa is built as
    ``bias_mant = b / 2`` at ``bias_exp = 7``: the same voltage as the fused
    runtime's ``b << 6``. The biases are chosen so that half of them (``b`` at
    ``bias_exp`` 6) would change which neurons fire; an odd bias beyond 13 bits
    has no encoding and the reader refuses the file in one line."""
    from lava_dtss.deploy.loihi_check import check_network
    from lava_dtss.deploy.netx_file import NetXFormatError
    rng = np.random.default_rng(3)
    n = dict(NEURON, vThMant=6000)
    bias = np.array([4500, 6002, -5000, 8190])
    layers = [LayerSpec(type='input', name='input', shape=(1, 4, 4), params={'inputScale': 3}),
              conv_spec('c1', rng.integers(-90, 90, (4, 1, 3, 3)), bias, (4, 4, 4), n, 1, 1, inputs=[0]),
              LayerSpec(type='flatten', name='flatten', shape=(), inputs=[1]),
              dense_spec('d', rng.integers(-60, 60, (3, 64)), np.zeros(3, int), NEURON, inputs=[2])]
    write_netx(NetSpec(layers, meta={'t_max': 4, 'format': FORMAT}), str(tmp_path / 'b.net'))
    spec = read_netx(str(tmp_path / 'b.net'))
    checks = check_network(spec)
    assert not any(c.violations for c in checks)
    assert any('bias_exp 7' in note for note in checks[1].notes)
    frames = rng.integers(0, 4, (2, 1, 4, 4)).astype(float)
    fused = lava_runtime.run(spec, frames, t_max=4)
    loihi = loihi_build.run(spec, frames, t_max=4)
    c1 = fused.fingerprints['c1'][:, 0]
    assert 0 < c1.sum() < 64 * 8                      # some neurons fire, not all
    for name, fp in fused.fingerprints.items():
        assert np.array_equal(loihi.fingerprints[name], fp), name
    assert np.array_equal(loihi.logits, fused.logits)
    layers[1].params['bias'] = np.array([4500, 6001, -5000, 8190])
    write_netx(NetSpec(layers, meta={'t_max': 4, 'format': FORMAT}), str(tmp_path / 'odd.net'))
    with pytest.raises(NetXFormatError, match=r"layer 1 \(conv 'c1'\): bias values -5000\.\.8190 .* even"):
        read_netx(str(tmp_path / 'odd.net'))


def _scale_script():
    return load_script('loihi_scale')


def test_spikformer_4_384_plans_at_full_scale_with_relay_gates(tmp_path):
    """The paper's network (4 blocks, 384 channels, fan-in up to 3,456): inhibiting
    the layer would wrap the 24-bit current somewhere (the refusal this build used to
    give); ``auto`` relay-gates exactly those layers and inhibits the rest within 24
    bits."""
    from lava_dtss.loihi2 import MAX_CURRENT
    spec = _scale_script().active_export('spikformer-4-384', str(tmp_path / 's.net'))
    with pytest.raises(ValueError, match='would wrap the 24-bit current'):
        loihi_build.plan(spec, 4, gate='inhibit')
    p = loihi_build.plan(spec, 4)
    modes = [st.gate_mode for st in p.gated]
    assert 'relay' in modes and 'inhibit' in modes
    value_max = {i: (p.input_max if i == 0 else 1) for i in p.stages}
    for st in p.gated:
        layer = spec.layers[st.index]
        hi, lo = loihi_build._current_bounds(spec, layer, value_max)
        need = int((hi + layer.params['bias']).max())
        mant, exp = loihi_build._inhibition(need)
        assert need <= mant << exp and mant <= 255
        if st.gate_mode == 'inhibit':                  # beats every input, and stays inside 24 bits
            assert st.gate[0] == mant << exp and lo.min() - st.gate[0] > -MAX_CURRENT
        else:                                          # inhibition would have wrapped the current
            assert st.gate[:3] == (1, 1, 0) and lo.min() - (mant << exp) <= -MAX_CURRENT
    assert p.max_offset == max(st.out_offset for st in p.stages.values())


def test_measured_state_finds_a_voltage_clip_and_none_in_the_shipped_model():
    """``measured_state``: the shipped digits model stays far inside the 24-bit state on
    real images; the same model with the first layer's weights all -50 drives that
    layer's voltage below -(2**23 - 1), where Lava clips and training does not."""
    from lava_dtss.deploy.loihi_check import measured_state
    from lava_dtss.loihi2 import MAX_UV
    spec = read_netx(SHIPPED)
    images = data.load_dataset('digits', 'test').tensors[0][:4]
    clean = measured_state(spec, images)
    assert set(clean) == {l.name for l in spec.layers if l.type in ('conv', 'attention')}
    assert not any(r['clips'] for r in clean.values())
    assert 0 < clean['sps.0']['max_v'] < MAX_UV - 1
    spec.layers[1].params['weight'][...] = -50
    spec.layers[1].active_steps = spec.t_max
    bad = measured_state(spec, np.ones((2,) + tuple(spec.layers[0].shape)))
    assert bad['sps.0']['clips'] and bad['sps.0']['max_v'] >= MAX_UV - 1, bad['sps.0']


@pytest.mark.parametrize('shape,co,k,stride,pad,bits', [((8, 8, 3), 5, 3, 1, 1, 8), ((9, 7, 4), 6, 3, 2, 1, 0),
                                                       ((4, 4, 16), 16, 1, 1, 0, 0), ((6, 6, 2), 3, 3, 2, 0, 2)])
def test_vectorised_conv_model_equals_lavas_conv(shape, co, k, stride, pad, bits):
    """``conv_whc`` (the CPU model ``--build loihi`` runs for Lava's ``Conv``) against
    lava-nc's own ``utils.conv`` on Lava's ``(W, H, C)`` layout: same integers,
    including after the 24-bit wrap of ``a_out``; binary and graded inputs."""
    from lava.proc.conv import utils
    from lava_dtss.lava_processes.conv_models import conv_whc
    rng = np.random.default_rng(k * 10 + stride)
    x = rng.integers(0, (1 << bits) if bits else 2, shape).astype(np.int32)
    w = rng.integers(-128, 128, (co, k, k, shape[-1])).astype(np.int32)
    ref = utils.conv(x, w, (k, k), (stride, stride), (pad, pad), (1, 1), 1)
    ours = conv_whc(x, w, (stride, stride), (pad, pad), (1, 1)).astype(np.int32)
    assert ours.shape == ref.shape and np.array_equal(ours, ref)
    big = (w * 4000).astype(np.int32)           # sums beyond 24 bits: both wrap the same way
    assert np.array_equal(utils.signed_clamp(conv_whc(x, big, (stride,) * 2, (pad,) * 2, (1, 1)).astype(np.int32), 24),
                          utils.signed_clamp(utils.conv(x, big, (k, k), (stride,) * 2, (pad,) * 2, (1, 1), 1), 24))


def test_spikformer_4_384_one_block_is_spike_identical_to_training_side_inference(tmp_path):
    """Spikformer-4-384 cut to one block and 8x8 images (2x2 tokens; every layer type of
    the preset at full width: graded-input stem, stride-2 convolutions, q/k/v, host
    attention, projection, MLP, residual sums, skip relays, both gate mechanisms, and the
    preset's largest fan-in, rpe's 384 x 3 x 3 = 3,456), 2 samples through ``--build
    loihi`` on the CPU simulator: every layer's spikes and the logits equal
    training-side inference."""
    from lava_dtss.deploy.reference import reference_run
    scale = _scale_script()
    spec = scale.active_export('spikformer-4-384', str(tmp_path / 's.net'), depth=1, image_size=8)
    rpe = next(l for l in spec.layers if l.name == 'rpe')
    assert int(np.prod(rpe.params['weight'].shape[1:])) == 384 * 9
    images = scale.random_images(spec, 2)
    ref_logits, ref_fps = reference_run(spec, images)
    res = loihi_build.run(spec, direct_images(images, spec.layers[0].params['inputScale']))
    assert {s.gate_mode for s in res.plan.gated} == {'relay', 'inhibit'}
    assert set(res.fingerprints) == set(ref_fps)
    for name, fp in ref_fps.items():
        assert fp[:, 0].sum() > 0, name                               # every layer fires
        assert np.array_equal(res.fingerprints[name], fp), name
    assert np.array_equal(res.logits, ref_logits)


def test_chip_budget_table_in_the_docs_is_the_scripts_output():
    """docs/loihi.md's generated budget table is what ``scripts/loihi_budget.py``
    prints now (every preset), and sharing convolution weights never needs more cores."""
    script = load_script('loihi_budget')
    with open(script.DOC) as f:
        text = f.read()
    block = script.table()
    assert script.replace_block(text, block) == text, 'run python scripts/loihi_budget.py --write'
    for row in block.splitlines()[2:6]:
        cells = [c.strip() for c in row.strip('|').split('|')]
        unshared, shared = (int(c.split(' / ')[0].replace(',', '')) for c in cells[4:6])
        assert shared <= unshared, row
    with pytest.raises(ValueError, match='markers'):
        script.replace_block('no markers here', block)


def test_peak_memory_counts_the_child_processes():
    """``PeakMemory`` (the benchmark's measured peak of a Lava run) sums the process
    tree: a child holding 200 MB raises the peak by about that much."""
    from lava_dtss.analysis.benchmark import PeakMemory
    with PeakMemory(interval=0.05) as idle:
        pass
    code = 'import time; a = bytearray(200 * 2**20); a[::4096] = b"x" * len(a[::4096]); time.sleep(2)'
    with PeakMemory(interval=0.05) as mem:
        subprocess.run([sys.executable, '-c', code], check=True, timeout=120)
    assert mem.peak - idle.peak > 150 * 2**20, (mem.peak, idle.peak)
