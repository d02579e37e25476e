"""scripts/early_exit.py on the shipped digits model: sweep, choice on
validation, JSON, figure and the docs section."""
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script():
    spec = importlib.util.spec_from_file_location('early_exit', os.path.join(ROOT, 'scripts', 'early_exit.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_early_exit_script_on_digits(tmp_path):
    doc = tmp_path / 'results.md'
    doc.write_text('# page\n\nkept\n')
    argv = ['--models', os.path.join(ROOT, 'netx_models', 'digits_tiny_dtss.net'), '--num-test', '40',
            '--out', str(tmp_path / 'out'), '--figure', str(tmp_path / 'fig.png'), '--doc', str(doc)]
    assert _script().main(argv) == 0
    r = json.loads((tmp_path / 'out' / 'digits_tiny_dtss.json').read_text())
    assert r['test_size'] == 40 and r['val_size'] == 200 and r['temperature'] > 0
    for policy in ('margin', 'confidence'):
        p = r['policies'][policy]
        steps = p['sweep']['val_steps']['exit']
        assert steps == sorted(steps)                                 # higher threshold, later exit
        assert policy == 'confidence' or steps[-1] == r['t_max']      # margin: up to never exiting early
        c = p['chosen']
        assert c['val_accuracy'] >= r['full_window']['val_accuracy'] - 0.005
        assert c['energy']['exit']['synops_per_image'] <= c['energy']['full']['synops_per_image']
    assert (tmp_path / 'fig.png').stat().st_size > 1000
    text = doc.read_text()
    assert 'kept' in text and text.count('## Per-sample early exit') == 1
    assert _script().main(argv) == 0                                  # rewritten, not appended
    assert doc.read_text().count('## Per-sample early exit') == 1


@pytest.mark.parametrize('argv, message', [(['--budget-pp', '-1'], 'budget'), (['--num-test', '0'], 'num-test'),
                                           (['--models', '/nonexistent.net'], 'does not exist')])
def test_early_exit_script_refuses_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit):
        _script().main(argv)
    assert message in capsys.readouterr().err
