"""The study pipeline: the fold/BatchNorm path of the blocks, BatchNorm
re-estimation, the validation split, the ANN twin, the energy model, and the
quick study (digits) end to end through scripts/study.py and scripts/report.py."""
import copy
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from lava_dtss.analysis.energy import EnergyModel, ann_energy, snn_energy
from lava_dtss.model import blocks
from lava_dtss.model import build_model
from lava_dtss.training import data
from lava_dtss.training import recalibrate_batchnorm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stock_current(self, x):
    """The reference path: slayer.synapse.Conv (Conv3d) then BatchNorm3d."""
    z = self.synapse(x)
    return self.norm(z) if self.norm is not None else z


def test_folded_convolution_equals_slayer_synapse(monkeypatch):
    """In float64: the two paths sum in different orders, so in float32 the gradients'
    last bits depend on the CPU's vector width (AVX2 vs AVX-512: 1e-4 relative seen).
    In float64 each sum of n <= 1e5 terms is within n * 2**-53 (about 1e-11) of exact
    relative to the sum of |terms|, so rtol 1e-7 holds on any x86-64 CPU and still
    catches a wrong fold (errors of 1e-3 and more)."""
    torch.manual_seed(0)
    fast = build_model('fmnist').double()
    ref = copy.deepcopy(fast)
    x, y = torch.rand(6, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (6,))
    out_f, spk_f = fast.forward_with_spikes(x)
    torch.nn.functional.cross_entropy(out_f, y).backward()
    monkeypatch.setattr(blocks.SpikingConv, 'synaptic_current', _stock_current)
    out_r, spk_r = ref.forward_with_spikes(x)
    torch.nn.functional.cross_entropy(out_r, y).backward()
    assert torch.equal(out_f, out_r)
    assert all(torch.equal(spk_f[n], spk_r[n]) for n in spk_r)
    for (n, pf), pr in zip(fast.named_parameters(), ref.parameters()):
        if pr.grad is not None:
            assert torch.allclose(pf.grad, pr.grad, rtol=1e-7, atol=1e-12), n
    for bf, br in zip(fast.buffers(), ref.buffers()):   # BatchNorm statistics of training mode
        assert torch.allclose(bf, br, rtol=1e-9, atol=1e-12)


def test_batchnorm_recalibration_matches_the_eval_mode_inputs_of_every_layer():
    """After re-estimation, every BatchNorm's statistics are the mean and variance of
    the input it receives in eval mode (the deployed network), over the images."""
    torch.manual_seed(0)
    model = build_model('tiny')
    images = torch.rand(40, 1, 8, 8)
    loader = [(images[i:i + 10], None) for i in range(0, 40, 10)]
    recalibrate_batchnorm(model, loader, 40)
    assert model.training and all(b.momentum == 0.1 for b in model.modules()
                                  if isinstance(b, torch.nn.BatchNorm3d))   # settings restored
    seen = {}
    norms = {b: n for n, b in model.named_modules() if isinstance(b, torch.nn.BatchNorm3d)}
    hooks = [b.register_forward_hook(lambda mod, i, o: seen.setdefault(mod, []).append(i[0])) for b in norms]
    model.eval()
    with torch.no_grad():
        for x, _ in loader:
            model(x)
    for h in hooks:
        h.remove()
    for norm, name in norms.items():   # equal batches: the mean of batch means and batch variances
        dims = [d for d in range(seen[norm][0].dim()) if d != 1]
        mean = torch.stack([z.mean(dims) for z in seen[norm]]).mean(0)
        var = torch.stack([z.var(dims) for z in seen[norm]]).mean(0)
        assert torch.allclose(norm.running_mean, mean, atol=1e-5), name
        assert torch.allclose(norm.running_var, var, rtol=1e-4, atol=1e-6), name
    before = [b.running_mean.clone() for b in norms]
    recalibrate_batchnorm(model, loader, 40)
    assert all(torch.equal(a, b.running_mean) for a, b in zip(before, norms))   # no memory of earlier stats


def test_holdout_split_is_fixed_and_disjoint():
    train = data.load_dataset('digits', 'train')
    rest, val = data.holdout_split(train, 100)
    rest2, val2 = data.holdout_split(train, 100)
    assert len(val) == 100 and len(rest) == len(train) - 100
    assert val.indices == val2.indices and not set(val.indices) & set(rest.indices)
    with pytest.raises(data.DatasetError, match='validation size'):
        data.holdout_split(train, len(train))


def test_ann_twin_has_bounded_real_valued_activations():
    model = build_model('tiny', dtss=False, neuron_impl='ann', t_max=1)
    _, acts = model.forward_with_spikes(torch.rand(3, 1, 8, 8))
    values = torch.cat([a.reshape(-1) for a in acts.values()])
    assert values.min() >= 0 and values.max() <= 1
    assert ((values > 0) & (values < 1)).any()   # graded, not spikes


def test_energy_model_arithmetic():
    em = EnergyModel(e_mac_pj=4.0, e_ac_pj=1.0, e_sram_64b_pj=64.0, weight_bits=8, state_bits=32,
                     snn_state_vars=2, ann_state_vars=1)
    snn = snn_energy({'a': 10, 'b': 100}, {'a': 5, 'b': 2}, first_layer='a', model=em)
    # a: 10 MACs (40) + 10 weights x 8 pJ + 5 updates x 2 vars x 2 accesses x 32 pJ
    assert snn['layers']['a'] == {'compute_pj': 40.0, 'memory_pj': 80.0 + 640.0, 'total_pj': 760.0}
    assert snn['layers']['b']['compute_pj'] == 100.0
    assert snn['total']['total_pj'] == pytest.approx(760.0 + 100.0 + 800.0 + 256.0)
    ann = ann_energy({'a': 10}, {'a': 3}, model=em)
    assert ann['layers']['a'] == {'compute_pj': 40.0, 'memory_pj': 80.0 + 192.0, 'total_pj': 312.0}


def _run(args, timeout=900):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_quick_study_and_report_end_to_end(tmp_path):
    results, runs, doc = tmp_path / 'results', tmp_path / 'runs', tmp_path / 'doc' / 'results.md'
    proc = _run(['scripts/study.py', '--quick', '--results', str(results), '--runs', str(runs)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    arms = sorted(p.name for p in results.iterdir() if (p / 'metrics.json').is_file())
    assert {'pretrain', 'ann-pretrain', 'ann', 'fixed-t1', 'fixed-t2', 'fixed-t3', 'fixed-t4',
            'dtss-default-l2', 'dtss-all-l2', 'dtss-suggested-l2', 'dtss-default-l2-init2', 'alloc-attn1',
            'fixed-t4-seed1'} <= set(arms)
    alloc = json.loads((results / 'alloc-attn1' / 'metrics.json').read_text())   # hand-set, never trained
    assert {n: s for n, s in alloc['active_steps'].items() if s != 4} == {'blocks.0.ssa.attn': 1,
                                                                         'blocks.0.ssa.proj': 1}
    head = json.loads((results / 'headline.json').read_text())
    assert f'{head["headline_arm"]}-seed1' in arms and 'alloc-attn1-seed1' in arms
    for tag in ('', '-seed1'):   # two-stage DTSS: the headline seed's learned gates, frozen, weights re-fit
        learned = json.loads((results / f'{head["headline_arm"]}{tag}' / 'metrics.json').read_text())
        refit = json.loads((results / f'{head["headline_arm"]}-refit{tag}' / 'metrics.json').read_text())
        assert refit['active_steps'] == learned['active_steps'] and refit['lambda_m'] == 0
        assert refit['gates_from'].endswith(f'{head["headline_arm"]}{tag}/metrics.json')
    sens = json.loads((results / 'sensitivity.json').read_text())
    assert set(sens['category_cut']) == {'sps', 'qkv', 'attn', 'mlp'}
    fixed = json.loads((results / 'fixed-t2' / 'metrics.json').read_text())
    assert fixed['avg_steps'] == 2 and fixed['val_accuracy'] is not None
    assert sum(fixed['synops_per_sample'].values()) > 0
    for arm in (head['headline_arm'], 'fixed-t4'):   # both models in Lava, spike for spike
        lava = json.loads((results / f'lava-{arm}.json').read_text())
        assert lava['agreement']['spikes_equal_all_layers'] and lava['agreement']['predictions'] == 1.0
        card = json.loads((results / f'tiny_{arm}.json').read_text())
        assert card['lava']['synops_gated'] == lava['synops_gated'] > 0
    # a second call finds every arm done and trains nothing; the common start comes back from results/
    assert (results / 'pretrain' / 'checkpoint.pt').is_file() and (results / 'ann' / 'checkpoint.pt').is_file()
    assert not (results / 'fixed-t2' / 'checkpoint.pt').exists()
    (runs / 'pretrain' / 'checkpoint.pt').unlink()
    again = _run(['scripts/study.py', '--quick', '--results', str(results), '--runs', str(runs)], timeout=300)
    assert again.returncode == 0 and 'done before' in again.stdout and '--out' not in again.stdout
    assert (runs / 'pretrain' / 'checkpoint.pt').read_bytes() == (results / 'pretrain' / 'checkpoint.pt').read_bytes()
    # --reevaluate re-runs evaluation and export of an arm evaluated otherwise, keeping its training
    metrics_path = results / 'fixed-t2' / 'metrics.json'
    old = json.loads(metrics_path.read_text())
    old['bn_calibration_mode'] = 'running-average'
    metrics_path.write_text(json.dumps(old))
    ree = _run(['scripts/study.py', '--quick', '--results', str(results), '--runs', str(runs), '--reevaluate'],
               timeout=300)
    assert ree.returncode == 0, ree.stdout[-2000:] + ree.stderr[-2000:]
    assert ree.stdout.count('re-evaluating') == 1 and '[fixed-t2] re-evaluating' in ree.stdout
    new = json.loads(metrics_path.read_text())
    assert new['reevaluated'] and new['bn_calibration_mode'] == 'eval-sequential'
    assert new['before_reevaluation']['test_accuracy'] == old['test_accuracy'] and new['wall_s'] == old['wall_s']
    rep = _run(['scripts/report.py', '--results', str(results), '--doc', str(doc)], timeout=300)
    assert rep.returncode == 0, rep.stderr[-3000:]
    text = doc.read_text()
    for arm in arms:
        assert f'| {arm} |' in text
    assert '## Two-stage DTSS' in text
    for png in ('pareto.png', 'active_steps.png', 'sensitivity_hist.png', 'sensitivity_curves.png'):
        assert (doc.parent / 'figures' / png).stat().st_size > 10_000


def test_report_without_results_is_one_clear_error(tmp_path):
    proc = _run(['scripts/report.py', '--results', str(tmp_path), '--doc', str(tmp_path / 'r.md')], timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith('error: no results under')
    assert 'Traceback' not in proc.stderr


def test_analyze_refuses_a_spiking_checkpoint_as_the_ann_twin(tmp_path):
    out = tmp_path / 'snn'
    proc = _run(['scripts/train_slayer.py', '--out', str(out), '--max-batches', '1', '--epochs', '1',
                 '--no-export', '--val-size', '50', '--t-max', '2', '--threads', '1'], timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = str(out / 'checkpoint.pt')
    bad = _run(['scripts/analyze.py', '--snn', ckpt, '--ann', ckpt, '--out', str(tmp_path / 's.json')], timeout=300)
    assert bad.returncode == 1 and 'is not an ANN twin' in bad.stderr and 'Traceback' not in bad.stderr
    assert not (tmp_path / 's.json').exists()


def test_kill_9_of_the_study_ends_its_training_subprocess(tmp_path):
    """``kill -9`` of ``scripts/study.py`` (issue 18): its training subprocess
    asked the kernel to end it with its parent (PR_SET_PDEATHSIG), so none is left."""
    import signal
    import uuid
    marker = uuid.uuid4().hex
    needle = f'LAVA_DTSS_TEST_MARKER={marker}'.encode()

    def marked(word=b''):
        pids = []
        for entry in filter(str.isdigit, os.listdir('/proc')):
            try:
                with open(f'/proc/{entry}/environ', 'rb') as f:
                    env = f.read()
                with open(f'/proc/{entry}/cmdline', 'rb') as f:
                    cmd = f.read()
            except OSError:
                continue
            if needle in env and word in cmd:
                pids.append(int(entry))
        return pids

    env = dict(os.environ, OMP_NUM_THREADS='1', LAVA_DTSS_TEST_MARKER=marker)
    proc = subprocess.Popen([sys.executable, 'scripts/study.py', '--quick', '--results', str(tmp_path / 'r'),
                             '--runs', str(tmp_path / 'runs')], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not marked(b'train_slayer') and time.monotonic() < deadline:
            time.sleep(0.3)
        training = marked(b'train_slayer')
        assert training, 'the study started no training'
        proc.kill()
        proc.wait()
        # the kernel ends it at once (a quick arm would end by itself within seconds)
        deadline = time.monotonic() + 2
        while marked() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marked() == [], f'the training subprocess {training} survived kill -9 of the study'
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in marked():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _one_line_failure(proc, *words):
    assert proc.returncode in (1, 2) and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1, proc.stderr[-3000:]
    for w in words:
        assert w in errors[0], errors[0]


@pytest.mark.parametrize('case', ['corrupt', 'list', 'keyless', 'doc_folder', 'results_file', 'nan',
                                  'doc_proc', 'figures_proc', 'readme_missing'])
def test_report_with_bad_results_or_paths_is_one_line(tmp_path, case):
    """report.py over a half-copied results folder or to a bad output path gave
    tracebacks (issue 18): one ``error:`` line, naming the file where it can."""
    import shutil
    results = tmp_path / 'results'
    shutil.copytree(os.path.join(ROOT, 'results', 'fashion-mnist-2026-11'), results)
    bad = results / 'ann' / 'metrics.json'
    doc = tmp_path / 'results.md'
    if case == 'corrupt':
        bad.write_text('{"accuracy": 0.')
    elif case == 'list':
        bad.write_text('[1, 2]')
    elif case == 'keyless':
        for arm in results.iterdir():
            if (arm / 'metrics.json').is_file():
                (arm / 'metrics.json').write_text('{}')
    elif case == 'doc_folder':
        doc.mkdir()
    elif case == 'results_file':
        shutil.rmtree(results)
        results.write_text('x')
    elif case == 'nan':    # was written into the page as "nan%"
        bad.write_text(bad.read_text().replace('"test_accuracy": ', '"test_accuracy": NaN, "x": ', 1))
    elif case == 'doc_proc':
        doc = tmp_path / 'proc' / 'results.md'
        doc.parent.symlink_to('/proc')
    args = ['--readme', str(tmp_path / 'README.md') if case == 'readme_missing' else 'none']
    if case == 'figures_proc':
        args += ['--figures', '/proc/lava-dtss-figures']
    proc = _run(['scripts/report.py', '--results', str(results), '--doc', str(doc)] + args, timeout=300)
    words = {'corrupt': [str(bad)], 'list': [str(bad), 'list'], 'keyless': ['lacks the key', 'metrics.json'],
             'doc_folder': [str(doc)], 'results_file': ['is a file'], 'nan': [str(bad), 'NaN'],
             'doc_proc': ['--doc', str(doc), 'cannot be written'],
             'figures_proc': ['--figures /proc/lava-dtss-figures', 'cannot create'],
             'readme_missing': ['--readme', 'no such file', '--readme none']}[case]
    _one_line_failure(proc, *words)
    if case in ('doc_proc', 'figures_proc', 'readme_missing'):   # refused before anything is written
        assert not (tmp_path / 'figures').exists() and not (tmp_path / 'results.md').exists()


@pytest.mark.parametrize('case', ['results_under_a_file', 'corrupt_metrics', 'demo_keyless'])
def test_study_with_bad_results_is_one_line(tmp_path, case):
    """study.py with ``--results`` under a file, or a corrupt results JSON of a
    finished arm, gave tracebacks (issue 18); ``--demo`` with a finished arm
    whose metrics lack keys trained the other arms first (past 300 s)."""
    results = tmp_path / 'results'
    if case == 'demo_keyless':
        (results / 'fixed-t8').mkdir(parents=True)
        (results / 'fixed-t8' / 'metrics.json').write_text('{"avg_steps": 8}')
        proc = _run(['scripts/study.py', '--demo', '--results', str(results), '--runs', str(tmp_path / 'runs')],
                    timeout=120)
        _one_line_failure(proc, str(results / 'fixed-t8' / 'metrics.json'), 'lacks test_accuracy')
        assert not (tmp_path / 'runs').exists()       # nothing trained
        return
    if case == 'results_under_a_file':
        (tmp_path / 'file').write_text('x')
        results = tmp_path / 'file' / 'results'
        words = ['--results', str(results)]
    else:
        (results / 'pretrain').mkdir(parents=True)
        (results / 'pretrain' / 'metrics.json').write_text('{"test_accuracy": ')
        words = [str(results / 'pretrain' / 'metrics.json')]
    proc = _run(['scripts/study.py', '--quick', '--results', str(results), '--runs', str(tmp_path / 'runs')],
                timeout=300)
    _one_line_failure(proc, *words)


def test_sensitivity_cuts_are_measured_with_batchnorm_re_estimated(tmp_path):
    """Every study arm re-estimates BatchNorm before it is evaluated; the
    sensitivity analysis now does the same for each category cut (issue 15):
    its accuracy equals the model cut, re-estimated on the same training images
    and evaluated by hand, and the trained statistics are restored after."""
    from lava_dtss.analysis.sensitivity import load_model, sensitivity, set_category_steps
    from lava_dtss.training import data
    from lava_dtss.training.checkpoints import evaluate, recalibrate_batchnorm
    paths = {}
    for kind in ('snn', 'ann'):
        out = tmp_path / kind
        proc = _run(['scripts/train_slayer.py', '--out', str(out), '--max-batches', '3', '--epochs', '1',
                     '--no-export', '--val-size', '60', '--t-max', '2', '--threads', '1', '--bn-calibration', '64']
                    + (['--ann'] if kind == 'ann' else []), timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        paths[kind] = str(out / 'checkpoint.pt')
    res = sensitivity(paths['snn'], paths['ann'], images=60, log=lambda _: None, bn_calibration=64)
    plain = sensitivity(paths['snn'], paths['ann'], images=60, log=lambda _: None, bn_calibration=0)
    model, _ = load_model(paths['snn'], 'fast')
    train, val = data.holdout_split(data.load_dataset('digits', 'train'), 60)
    val_loader = data.make_loader(val, 256, shuffle=False, seed=0)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    for category in ('sps', 'mlp'):
        set_category_steps(model, category, 1)
        assert plain['category_cut'][category][1]['val_accuracy'] == evaluate(model, val_loader)['accuracy']
        recalibrate_batchnorm(model, data.make_loader(train, 256, shuffle=True, seed=12345), 64)
        assert res['category_cut'][category][1]['val_accuracy'] == evaluate(model, val_loader)['accuracy']
        model.load_state_dict(trained)
    assert res['bn_calibration'] == 64 and plain['bn_calibration'] == 0


def test_docs_digits_figures_are_generated_from_committed_results(tmp_path):
    """The digits figures, the default Lava run and the speed report are blocks
    ``report.py`` generates from committed result files (issue 15: no hand-copied
    figure) into the docs pages of ``DOC_BLOCKS`` (issue 28: out of the README); each
    block in the committed page is what the generator writes now, and the README
    keeps only its results block."""
    from lava_dtss.analysis.report import (DIGITS_END, DIGITS_START, DOC_BLOCKS, README_END, README_START,
                                           ReportError, demo_table, replace_block)
    assert set(DOC_BLOCKS) == {'digits', 'lava', 'speed'}
    readme = open(os.path.join(ROOT, 'README.md')).read()
    assert README_START in readme and README_END in readme
    for page, start, end, make in DOC_BLOCKS.values():
        assert start not in readme and end not in readme   # one place for each block
        text = open(os.path.join(ROOT, page)).read()
        block = text.split(start, 1)[1].split(end, 1)[0]
        assert block.strip() == '\n'.join(make()).strip(), page
    # the table: mean over the seeds present, one row per recipe found
    for name, acc, q, steps in (('fixed-t2', 0.90, 0.80, 2.0), ('fixed-t2-seed1', 0.80, 0.90, 2.0),
                                ('dtss-default', 0.95, None, 3.5)):
        (tmp_path / 'demo' / name).mkdir(parents=True)
        (tmp_path / 'demo' / name / 'metrics.json').write_text(json.dumps(
            {'test_accuracy': acc, 'quantized_test_accuracy': q, 'avg_steps': steps}))
    table = demo_table(str(tmp_path / 'demo'))
    assert table[2:] == ['| dtss-default | 1 | 95.00 | - | 3.50 |', '| fixed-t2 | 2 | 85.00 ± 7.07 | 85.00 | 2.00 |']
    plain = tmp_path / 'R.md'
    plain.write_text('no markers\n')
    with pytest.raises(ReportError, match='no generated section'):
        replace_block(str(plain), DIGITS_START, DIGITS_END, ['x'])
    assert plain.read_text() == 'no markers\n'


def test_slope_section_says_whether_time_steps_matter():
    """The fixed-T curve's verdict: a span of 3 pp and a last step above the seed spread."""
    from lava_dtss.analysis.report import slope_section
    arms = lambda accs: {t: {'test_accuracy': a, 'val_accuracy': a} for t, a in enumerate(accs, 1)}   # noqa: E731
    steep = '\n'.join(slope_section(arms([0.86, 0.88, 0.89, 0.90]), 4, {4: [0.90, 0.902, 0.898]}))
    assert 'from T = 1 to T = 4: +4.00 pp' in steep and 'The curve has a slope' in steep
    flat = '\n'.join(slope_section(arms([0.86, 0.88, 0.899, 0.90]), 4, {4: [0.90, 0.902, 0.898]}))   # 0.1 < 0.2 pp
    assert 'not steep enough' in flat
    short = '\n'.join(slope_section(arms([0.88, 0.89, 0.895, 0.90]), 4, {4: [0.90, 0.901]}))   # span 2 pp
    assert 'not steep enough' in short and 'not measured' not in short
    assert 'not measured (one seed)' in '\n'.join(slope_section(arms([0.8, 0.9]), 2, None))
    # seeds of T = 3 too: the last step is mean against mean (seed 0 said +1 pp; the means say +0.1 pp)
    both = '\n'.join(slope_section(arms([0.86, 0.88, 0.89, 0.90]), 4, {4: [0.90, 0.902, 0.898],
                                                                        3: [0.89, 0.903, 0.904]}))
    assert 'T = 3: 3 seeds, T = 4: 3 seeds' in both and 'last step (T = 3 to 4): +0.10 pp' in both
    assert 'not steep enough' in both and '89.90 ± 0.78 (3)' in both
    assert slope_section({4: {'test_accuracy': 0.9}}, 4, None) == []


def test_sensitivity_loads_a_checkpoint_of_the_earlier_gate(tmp_path):
    """A fixed-T checkpoint saved with the score-per-step gate (``gate.scores``) loads
    in the sensitivity analysis, as in every other loader (the study's adopted
    pre-training failed there: 'its model state does not fit its configuration')."""
    import torch
    from lava_dtss.analysis.sensitivity import load_model
    from lava_dtss.model import build_model
    torch.manual_seed(0)
    model = build_model('tiny', dtss=False, t_max=4)
    state = {}
    for k, v in model.state_dict().items():
        if k.endswith('gate.length'):
            k, v = k[:-len('length')] + 'scores', torch.tensor([0.1, 0.2, 0.3, 0.9])   # chose 4 steps
        state[k] = v
    path = tmp_path / 'old.pt'
    torch.save({'config': model.cfg.to_dict(), 'model': state, 'args': {'ann': False}, 'dtss': False}, path)
    loaded, _ = load_model(str(path), 'fast')
    for k, v in model.state_dict().items():
        if not k.endswith(('gate.length', 'gate.frozen_steps')):
            assert torch.equal(loaded.state_dict()[k], v), k


def test_two_study_processes_split_the_sweep_by_claims(tmp_path, monkeypatch):
    """Two ``scripts/study.py`` on one results folder (one per core): an arm
    another live process has claimed is skipped (``wait=False`` gives its pid)
    or waited for; a claim of a process that ended is taken over; waiting on a
    process that ends without the arm is one clear error."""
    from lava_dtss.analysis import study
    runs, results = tmp_path / 'runs', tmp_path / 'results'
    runs.mkdir(), results.mkdir()
    other = subprocess.Popen(['sleep', '60'])
    try:
        (runs / 'fixed-t2.claim').write_text(str(other.pid))
        assert study.claim(str(runs), 'fixed-t2') == other.pid
        monkeypatch.setattr(study, '_train_arm', lambda *a: pytest.fail('trained an arm another process holds'))
        assert study.run_arm({}, 'fixed-t2', [], str(results), str(runs), wait=False) == other.pid
        assert (runs / 'fixed-t2.claim').read_text() == str(other.pid)   # its claim untouched
    finally:
        other.kill()
        other.wait()
    monkeypatch.setattr(study, 'CLAIM_POLL_S', 0.01)
    with pytest.raises(study.StudyError, match=f'study process {other.pid}, which ended without finishing it'):
        study.wait_for(str(results), str(runs), 'fixed-t2', other.pid)
    # the claim of the process that ended is taken over; the arm trains here and the claim is released
    trained = []

    def train(st, name, args, res, rn):
        assert (runs / f'{name}.claim').read_text() == str(os.getpid())
        trained.append(name)
        (results / name).mkdir()
        (results / name / 'metrics.json').write_text(json.dumps({'test_accuracy': 0.5, 'avg_steps': 2.0}))
        return study.load(str(results / name))
    monkeypatch.setattr(study, '_train_arm', train)
    assert study.run_arm({}, 'fixed-t2', [], str(results), str(runs), wait=False)['avg_steps'] == 2.0
    assert trained == ['fixed-t2'] and not (runs / 'fixed-t2.claim').exists()
    # once(): work done once, and not at all when done
    calls = []
    study.once(str(runs), 'lava-x', lambda: bool(calls), lambda: calls.append(1))
    study.once(str(runs), 'lava-x', lambda: bool(calls), lambda: calls.append(1))
    assert calls == [1] and not (runs / 'lava-x.claim').exists()


def test_a_study_adopts_the_ann_twin_of_another(tmp_path):
    """The T_max = 8 study adopts the ANN twin (one step) of the T_max = 4 study:
    its files copied, marked adopted_from; a missing source is one clear error."""
    from lava_dtss.analysis import study
    src, dest = tmp_path / 'a', tmp_path / 'b'
    (src / 'ann').mkdir(parents=True)
    (src / 'ann' / 'metrics.json').write_text(json.dumps({'test_accuracy': 0.9, 'avg_steps': 1.0}))
    (src / 'ann' / 'checkpoint.pt').write_bytes(b'weights')
    dest.mkdir()
    study.adopt_arms(str(src), str(dest), ('ann',))
    assert (dest / 'ann' / 'checkpoint.pt').read_bytes() == b'weights'
    assert json.loads((dest / 'ann' / 'metrics.json').read_text())['adopted_from'] == str(src / 'ann')
    with pytest.raises(study.StudyError, match='adopts arm ann-pretrain'):
        study.adopt_arms(str(src), str(dest), ('ann-pretrain',))


def test_each_study_page_gets_its_own_figures_folder():
    """report.py --doc docs/results-t8.md wrote its figures into docs/figures/, over the
    default study's: each page now has its own folder by default."""
    from lava_dtss.analysis.report import default_figures
    assert default_figures('/d/results.md') == '/d/figures'
    assert default_figures('/d/results-2026-11.md') == '/d/figures-2026-11'
    assert default_figures('/d/results-t8.md') == '/d/figures-t8'
    assert default_figures('/d/quick.md') == '/d/figures-quick'


def test_a_claim_in_a_new_runs_folder_creates_it(tmp_path):
    """`study.py --runs NEW` on a folder that does not exist yet: the first claim makes it
    (it failed with 'No such file or directory: NEW/<arm>.claim')."""
    from lava_dtss.analysis import study
    runs = tmp_path / 'new' / 'runs'
    assert study.claim(str(runs), 'fixed-t1') == 0
    assert (runs / 'fixed-t1.claim').read_text() == str(os.getpid())
