"""Per-sample early exit: the policies (training side) and the Lava runtime
with continuous batching, spike for spike equal to the reference."""
import os

import numpy as np
import pytest
import torch

from lava_dtss.deploy import early_exit as ee
from lava_dtss.deploy import lava_runtime
from lava_dtss.deploy.export import dense_spec
from lava_dtss.deploy.netx_file import LayerSpec, NetSpec, read_netx
from lava_dtss.deploy.reference import direct_images, exit_reference, readout_steps, reference_run
from lava_dtss.training import data
from script_loader import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, 'netx_models', 'digits_tiny_dtss.net')
# a margin threshold (units of z) under which the shipped digits model exits its
# samples at different steps (3, 7 and 8) on the images below; the shipped model's
# late layers stop at 3 steps, so its margins barely move after step 3
THRESHOLD = 640000


@pytest.fixture(scope='module')
def digits():
    spec = read_netx(SHIPPED)
    images = data.load_dataset('digits', 'test').tensors[0][:7]
    return spec, images


# ------------------------------------------------------------------ policies
def test_policies_on_hand_made_logit_sums():
    # 3 samples, 3 classes, 4 steps: z [S, K, T]
    z = np.array([[[5, 10, 20, 30], [1, 2, 3, 4], [0, 0, 0, 0]],      # margins 4, 8, 17, 26
                  [[3, 6, 9, 12], [3, 6, 9, 12], [0, 1, 2, 3]],       # margins 0 always
                  [[0, 0, 0, 9], [1, 0, 0, 0], [0, 50, 0, 0]]])       # 1, 50, 0, 9
    assert list(ee.margins(z)[0]) == [4, 8, 17, 26] and list(ee.margins(z)[2]) == [1, 50, 0, 9]
    assert list(ee.exit_steps(z, 'margin', 8)) == [2, 4, 2]          # the last step always ends
    assert list(ee.exit_steps(z, 'margin', 0)) == [1, 1, 1]
    assert list(ee.exit_steps(z, 'never')) == [4, 4, 4]
    assert list(ee.exit_logits(z, [2, 4, 2])[2]) == [0, 0, 50]
    c = ee.confidences(z, temperature=1.0)
    e = np.exp(0.75)    # sample 1, step 0: z / (1 * 4) = [0.75, 0.75, 0]
    assert c.shape == (3, 4) and c[1, 0] == pytest.approx(e / (2 * e + 1)) and np.all((c > 0) & (c <= 1))
    steps = ee.exit_steps(z, 'confidence', 0.99, temperature=0.1)
    assert steps[1] == 4 and steps[0] < 4
    fps = {'a': np.arange(24).reshape(12, 2) + 1}
    cut = ee.truncate_fingerprints(fps, np.array([1, 4, 2]), 4)['a']
    assert (cut[1:4] == 0).all() and (cut[4:8] == fps['a'][4:8]).all() and (cut[10:12] == 0).all()
    avg = ee.average_steps(np.array([1, 4, 2]), {'x': 4, 'y': 2}, {'x': 3, 'y': 1})
    assert avg['exit'] == pytest.approx(7 / 3) and avg['plain'] == pytest.approx((7 / 3 + 5 / 3) / 2)
    assert avg['weighted'] == pytest.approx((3 * 7 / 3 + 5 / 3) / 4)
    assert ee.lava_steps([2, 8, 2, 2, 2, 2, 2], 3) == 9 and ee.lava_steps([4] * 5, 1) == 21


def test_threshold_choice_respects_the_budget_on_validation():
    rows = [{'threshold': 0, 'accuracy': 0.80, 'steps': {'exit': 1.0}},
            {'threshold': 5, 'accuracy': 0.848, 'steps': {'exit': 1.5}},
            {'threshold': 9, 'accuracy': 0.851, 'steps': {'exit': 2.5}},
            {'threshold': 99, 'accuracy': 0.85, 'steps': {'exit': 4.0}}]
    assert ee.choose_threshold(rows, 0.85, 0.5)['threshold'] == 5
    assert ee.choose_threshold(rows, 0.85, 0.1)['threshold'] == 9
    assert ee.choose_threshold(rows, 0.99, 0.5) is None
    tau = ee.calibrate_temperature(np.array([[40.0, 0.0], [0.0, 40.0], [40.0, 0.0]]), np.array([0, 1, 1]))
    assert tau > 1     # one wrong confident answer: softer


@pytest.mark.parametrize('policy, threshold, message', [
    ('margin', -1, 'integer >= 0'), ('margin', 2.5, 'integer >= 0'), ('margin', None, 'numeric'),
    ('margin', True, 'numeric'), ('confidence', 0, r'\(0, 1\]'), ('confidence', 1.5, r'\(0, 1\]'),
    ('entropy', 1, 'unknown exit policy'), ('never', 3, 'no threshold')])
def test_bad_policy_or_threshold_is_one_clear_error(policy, threshold, message):
    with pytest.raises(ValueError, match=message):
        ee.check_policy(policy, threshold)


def test_stock_file_without_readout_is_refused():
    rng = np.random.default_rng(0)
    w = rng.integers(-50, 50, (4, 6))
    spec = NetSpec(layers=[LayerSpec(type='input', name='input', shape=(6,)),
                           dense_spec('fc', w, np.zeros(4, np.int64),
                                      {'type': 'CUBA', 'iDecay': 4096, 'vDecay': 1024, 'vThMant': 80},
                                      inputs=[0])], meta={})
    frames = rng.integers(0, 2, (2, 6, 4)).astype(float)
    with pytest.raises(ValueError, match='no readout layer'):
        lava_runtime.run_exit(spec, frames, 'margin', 10)
    with pytest.raises(ValueError, match='no readout layer'):
        readout_steps(spec, torch.zeros(1, 6))


def test_per_step_readout_sums_end_in_the_full_window_logits(digits):
    spec, images = digits
    logits, fps = reference_run(spec, images)
    z, fps2 = readout_steps(spec, images, batch_size=4)
    assert z.dtype == np.int64 and z.shape == (7, 10, spec.t_max)
    assert np.array_equal(z[:, :, -1], spec.t_max * logits.astype(np.int64))
    assert all(np.array_equal(fps[n], fps2[n]) for n in fps)
    steps = ee.exit_steps(z, 'margin', THRESHOLD)
    assert 1 < len(set(steps.tolist())) and steps.max() == spec.t_max    # exits differ per sample
    full_ops, _ = ee.exit_operations(spec, images, np.full(7, spec.t_max))
    ops, upd = ee.exit_operations(spec, images, steps)
    assert sum(ops.values()) < sum(full_ops.values())


# ------------------------------------------------------------------ Lava
@pytest.mark.parametrize('policy, threshold, batch, gating', [
    ('margin', THRESHOLD, 1, True), ('margin', THRESHOLD, 3, True), ('margin', THRESHOLD, 2, False),
    ('never', None, 3, True)])
def test_lava_exit_equals_reference(digits, policy, threshold, batch, gating):
    """Every layer's fingerprints at every step, exit steps, logits, operation
    counts and the Lava step count of continuous batching."""
    spec, images = digits
    ref = exit_reference(spec, images, policy, threshold)
    frames = direct_images(images, 255)
    if policy == 'never':       # frames with a time axis: one per window step
        frames = np.repeat(frames[..., None], spec.t_max, axis=-1)
    res = lava_runtime.run_exit(spec, frames, policy, threshold, gating=gating, batch=batch)
    assert np.array_equal(res.exit_steps, ref['steps'])
    assert np.array_equal(res.logits, ref['logits'])
    assert np.array_equal(res.predictions, ref['logits'].argmax(1))
    assert set(res.fingerprints) == set(ref['fingerprints'])
    for n, fp in ref['fingerprints'].items():
        assert np.array_equal(res.fingerprints[n], fp), n
    ops, updates = ee.exit_operations(spec, images, ref['steps'], gating=gating)
    assert res.synops == ops and res.neuron_updates == updates
    assert res.num_steps == ee.lava_steps(ref['steps'], batch)
    if policy == 'never':
        assert res.num_steps == lava_runtime.windows(7, batch) * spec.t_max + 1


def test_lava_exit_resets_a_current_with_memory(digits):
    """With iDecay < 4096 the synaptic current carries over between steps: a row
    that takes a new sample must zero it (and v) as the reference starts from zero."""
    import copy
    spec, images = digits
    spec = copy.deepcopy(spec)
    for layer in spec.layers:
        if layer.type in ('conv', 'attention'):
            layer.neuron['iDecay'] = 3000
    ref = exit_reference(spec, images, 'margin', THRESHOLD)
    res = lava_runtime.run_exit(spec, direct_images(images, 255), 'margin', THRESHOLD, batch=3)
    assert np.array_equal(res.exit_steps, ref['steps']) and np.array_equal(res.logits, ref['logits'])
    for n, fp in ref['fingerprints'].items():
        assert np.array_equal(res.fingerprints[n], fp), n


def test_lava_refuses_the_confidence_policy(digits):
    spec, images = digits
    with pytest.raises(ValueError, match='softmax'):
        lava_runtime.run_exit(spec, direct_images(images, 255), 'confidence', 0.9)


def _run_lava_script():
    return load_script('run_lava')


@pytest.mark.parametrize('argv, message', [
    (['--exit-policy', 'margin', '--exit-threshold', '-3'], 'integer >= 0'),
    (['--exit-policy', 'margin', '--exit-threshold', '3', '--build', 'loihi'], 'fused build only'),
    (['--exit-threshold', '5'], 'needs --exit-policy'),
    (['--exit-policy', 'confidence', '--exit-threshold', '2'], r'\(0, 1\]')])
def test_run_lava_exit_options_refuse_bad_input(argv, message):
    with pytest.raises(ValueError, match=message):
        _run_lava_script().parse_args(argv)


def test_run_lava_with_exit_reports_agreement_and_fewer_steps(tmp_path, capsys):
    import json
    out = tmp_path / 'r.json'
    code = _run_lava_script().main(['--num-samples', '6', '--batch', '3', '--gated-only', '--exit-policy',
                                    'margin', '--exit-threshold', str(THRESHOLD), '--json', str(out)])
    r = json.loads(out.read_text())
    assert code == 0 and r['agreement']['exit_steps_equal'] and r['agreement']['spikes_equal_all_layers']
    assert r['lava_steps'] < r['lava_steps_without_exit'] and r['avg_exit_steps'] < r['t_max']
    assert 'exit steps identical' in capsys.readouterr().out
