"""run_lava.py report and export_netx.py on their own (in-process)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from lava_dtss.deploy.netx_file import read_netx
from lava_dtss.model import build_model
from lava_dtss.training import save_checkpoint
from script_loader import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name):
    return load_script(name)


def test_run_lava_json_report_without_gating(tmp_path, capsys):
    out = tmp_path / 'report.json'
    code = _script('run_lava').main(['--num-samples', '3', '--no-gating', '--json', str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report['num_samples'] == 3 and report['t_max'] == 8
    assert report['agreement']['spikes_equal_all_layers'] and report['agreement']['logits_equal']
    assert report['agreement']['predictions'] == 1.0
    assert 'synops_ungated' in report and 'synops_gated' not in report
    assert report['neuron_updates_ungated'] == sum(
        e['neuron_updates_ungated'] for e in report['layers'].values())
    assert 'identical' in capsys.readouterr().out


def test_run_lava_batched_report(tmp_path, capsys):
    out = tmp_path / 'report.json'
    code = _script('run_lava').main(['--num-samples', '5', '--batch', '2', '--gated-only',
                                     '--json', str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report['batch'] == 2 and report['lava_steps'] == 3 * report['t_max']
    assert report['agreement']['spikes_equal_all_layers'] and report['agreement']['logits_equal']
    assert report['memory_mb']['total'] > 0
    assert 'batch 2' in capsys.readouterr().out


def test_export_netx_from_a_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model('tiny')
    ckpt = tmp_path / 'checkpoint.pt'
    save_checkpoint(str(ckpt), model=model.state_dict(), config=model.cfg.to_dict(), dtss=True,
                    args={'dataset': 'digits'})
    out = tmp_path / 'm.net'
    assert _script('export_netx').main([str(ckpt), '--out', str(out)]) == 0
    spec = read_netx(str(out))
    assert spec.meta['dataset'] == 'digits' and spec.layers[-1].type == 'readout'
    card = json.loads((tmp_path / 'm.json').read_text())
    assert card['preset'] == 'tiny' and 0 <= card['quantized_test_accuracy'] <= 1
    assert set(card['active_steps']) == {n for n, _ in model.gated_layers()}


def test_benchmark_runs_small_and_checks_lava_against_the_reference(tmp_path):
    """scripts/benchmark.py end to end at toy sizes: every section printed, Lava equal to the reference;
    ``--out`` saves the same report after a header naming the command and the machine."""
    import subprocess
    import sys
    out = tmp_path / 'bench.md'
    cmd = [sys.executable, 'scripts/benchmark.py', '--preset', 'tiny', '--batch-size', '4', '--train-steps', '1',
           '--rounds', '1', '--threads', '1', '--model', 'netx_models/digits_tiny_dtss.net', '--lava-samples', '6',
           '--single-samples', '2', '--batch', '4', '--stock-steps', '3', '--exit-samples', '6',
           '--exit-threshold', '300000', '--out', str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for words in ('## Training', 'stock slayer.neuron.cuba', 'clipped ReLU', '## Lava', 'Lava gated, B=4',
                  'Lava ungated, B=4', 'measured wall-time saving', '## Lava early exit',
                  'ratios with / without exit', '## Stock NetX'):
        assert words in proc.stdout, proc.stdout
    saved = out.read_text()
    assert saved.startswith('`python scripts/benchmark.py --preset tiny') and 'cores, load average' in saved
    header, body = saved.split('\n', 1)
    assert header + '\n' + body + f'wrote {out}' in proc.stdout       # what was printed, as printed
    assert '## Training' in body and '## Stock NetX' in body


# ---------------------------------------------------------------- bad checkpoints (issue 8)
def _good_ckpt():
    torch.manual_seed(0)
    model = build_model('tiny')
    return {'model': model.state_dict(), 'config': model.cfg.to_dict(), 'dtss': True,
            'args': {'dataset': 'digits'}}


def _bad(edit):
    def make():
        ckpt = _good_ckpt()
        edit(ckpt)
        return ckpt
    return make


def _first_weight(ckpt):
    return next(iter(ckpt['model']))


BAD_CHECKPOINTS = {
    'not_a_dict': (lambda: [1, 2, 3], ['holds a list', 'expected a dict']),
    'missing_config': (_bad(lambda c: c.pop('config')), ["missing key 'config'"]),
    'missing_model': (_bad(lambda c: c.pop('model')), ["missing key 'model'"]),
    'model_a_list': (_bad(lambda c: c.update(model=[1])), ["'model' is a list, expected a dict"]),
    'config_a_string': (_bad(lambda c: c.update(config='tiny')), ["'config' is a str, expected a dict"]),
    'config_bad_type': (_bad(lambda c: c['config'].update(embed_dim='32')),
                        ["config['embed_dim'] = '32'", 'whole number']),
    'config_huge': (_bad(lambda c: c['config'].update(depth=10 ** 9)), ["config['depth'] = 1000000000"]),
    'config_unknown_field': (_bad(lambda c: c['config'].update(surprise=1)),
                             ["'config' does not describe a lava_dtss model", 'surprise']),
    'config_missing_field': (_bad(lambda c: c['config'].pop('sps')),
                             ["'config' does not describe a lava_dtss model", 'sps']),
    'weight_missing': (_bad(lambda c: c['model'].pop(_first_weight(c))), ["'model' misses 1 weight"]),
    'weight_unknown': (_bad(lambda c: c['model'].update(extra=torch.zeros(1))), ["unknown weight", "'extra'"]),
    'weight_shape': (_bad(lambda c: c['model'].update({_first_weight(c): torch.zeros(3, 3)})),
                     ['has shape (3, 3), expected']),
    'weight_type': (_bad(lambda c: c['model'].update({_first_weight(c): 1.5})),
                    ['is a float, expected a tensor']),
    'weight_nan': (_bad(lambda c: c['model'][_first_weight(c)].fill_(float('nan'))), ['NaN or infinite']),
    'args_a_list': (_bad(lambda c: c.update(args=['digits'])), ["'args' is a list, expected a dict"]),
    'dataset_not_a_string': (_bad(lambda c: c['args'].update(dataset=3)), ["args['dataset'] = 3"]),
    'dtss_a_string': (_bad(lambda c: c.update(dtss='no')), ["'dtss' = 'no'"]),
}


def test_export_netx_refuses_checkpoints_with_bad_content(tmp_path, capsys):
    """Every case: one line naming the file and what is wrong, no .net written;
    the real script turns it into one ``error:`` line (checked for one case)."""
    export = _script('export_netx')
    for name, (make, words) in BAD_CHECKPOINTS.items():
        ckpt = tmp_path / f'{name}.pt'
        torch.save(make(), ckpt)
        out = tmp_path / f'{name}.net'
        with pytest.raises(ValueError) as info:
            export.main([str(ckpt), '--out', str(out)])
        msg = str(info.value)
        assert msg.startswith(f'{ckpt} is not a lava_dtss training checkpoint: ') and '\n' not in msg, msg
        for w in words:
            assert w in msg, (name, msg)
        assert not out.exists() and not (tmp_path / f'{name}.json').exists()
    res = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'export_netx.py'),
                          str(tmp_path / 'weight_shape.pt'), '--out', str(tmp_path / 'x.net')],
                         capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    errors = [line for line in res.stderr.splitlines() if line.startswith('error:')]
    assert res.returncode == 1 and 'Traceback' not in res.stderr and len(errors) == 1, res.stderr[-2000:]
    assert 'has shape (3, 3), expected' in errors[0]


def test_export_netx_over_an_existing_export_needs_overwrite(tmp_path, capsys):
    """``export_netx.py --out RUN/model.net`` over a finished run silently replaced
    its model.net and model.json (issue 18): refused without ``--overwrite``."""
    ckpt = tmp_path / 'checkpoint.pt'
    torch.save(_good_ckpt(), ckpt)
    out, card = tmp_path / 'model.net', tmp_path / 'model.json'
    out.write_bytes(b'the run\'s export')
    card.write_text('{"run": 1}')
    res = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'export_netx.py'), str(ckpt),
                          '--out', str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    errors = [line for line in res.stderr.splitlines() if line.startswith('error:')]
    assert res.returncode == 1 and 'Traceback' not in res.stderr and len(errors) == 1, res.stderr[-2000:]
    assert str(out) in errors[0] and '--overwrite' in errors[0]
    assert out.read_bytes() == b'the run\'s export' and card.read_text() == '{"run": 1}'
    card.unlink()                         # the card alone is guarded too
    out.unlink()
    card.write_text('{"run": 1}')
    with pytest.raises(ValueError, match='--overwrite'):
        _script('export_netx').main([str(ckpt), '--out', str(out)])
    assert not out.exists()
    assert _script('export_netx').main([str(ckpt), '--out', str(out), '--overwrite']) == 0
    assert out.stat().st_size > 100 and json.loads(card.read_text())['preset'] == 'tiny'


def test_export_netx_failure_after_writing_leaves_no_half_export(tmp_path, monkeypatch):
    """A failure after the .net is written (here: the accuracy of the exported
    model) removes it: the .net and its .json exist together or not at all."""
    ckpt = tmp_path / 'checkpoint.pt'
    torch.save(_good_ckpt(), ckpt)
    import lava_dtss.deploy.export

    def broken(*a, **k):
        raise OSError('No space left on device')
    monkeypatch.setattr(lava_dtss.deploy.export, 'deployed_accuracy', broken)
    with pytest.raises(OSError):
        _script('export_netx').main([str(ckpt), '--out', str(tmp_path / 'm.net')])
    assert not (tmp_path / 'm.net').exists() and not (tmp_path / 'm.json').exists()


# ---------------------------------------------------------------- issue 18: one line, never a traceback
@pytest.mark.parametrize('script, args', [
    ('train_slayer', ['--epochs', '1', '--out', 'OUT']),
    ('export_netx', ['missing.pt', '--out', 'OUT/m.net']),
    ('analyze', ['--snn', 'missing.pt', '--ann', 'missing.pt', '--out', 'OUT/s.json']),
    ('benchmark', ['--skip-lava', '--skip-stock']),
])
def test_ctrl_c_to_the_group_while_a_script_imports_is_one_line(tmp_path, script, args):
    """A group SIGINT (Ctrl-C) while the script loads torch and the package gave a
    KeyboardInterrupt traceback: now exit 130 and one line."""
    import signal
    import time
    args = [a.replace('OUT', str(tmp_path / 'out')) for a in args]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'scripts', f'{script}.py'), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS='1'), start_new_session=True)
    try:
        time.sleep(0.4)                  # importing (torch alone takes longer)
        assert proc.poll() is None
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, stderr[-2000:]
    assert 'Traceback' not in stderr and 'KeyboardInterrupt' not in stderr, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith('interrupted')


@pytest.mark.parametrize('script, args, words', [
    ('analyze', ['--snn', 'x.pt', '--ann', 'x.pt', '--out', '/tmp/x.json', '--threads', '-1'], '--threads must be >= 1'),
    # --out checked before the analysis (the missing checkpoints would be reported first otherwise)
    ('analyze', ['--snn', 'x.pt', '--ann', 'x.pt', '--out', '/tmp'], '--out /tmp: is a folder'),
    ('analyze', ['--snn', 'x.pt', '--ann', 'x.pt', '--out', '/proc/x.json'],
     '--out /proc/x.json: cannot be written in /proc'),
    ('benchmark', ['--preset', 'nope', '--skip-lava'], "--preset 'nope' is unknown"),
    ('benchmark', ['--skip-train', '--skip-stock', '--model', '/etc/passwd'], 'not an HDF5 file'),
    ('benchmark', ['--skip-train', '--skip-stock', '--data-dir', '/nonexistent'],
     'fashion-mnist directory /nonexistent does not exist'),
    ('benchmark', ['--scale', '--scale-batches', '1,x'], "--scale-batches '1,x': expected comma-separated integers"),
    ('benchmark', ['--scale', '--scale-batches', '0,16'], '--scale-batches must be >= 1'),
])
def test_analysis_scripts_bad_options_are_one_line(script, args, words):
    res = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', f'{script}.py'), *args],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert res.returncode in (1, 2) and 'Traceback' not in res.stderr, res.stderr[-2000:]
    assert words in res.stderr.strip().splitlines()[-1], res.stderr[-2000:]
