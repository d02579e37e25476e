"""scripts/early_exit.py on the shipped digits model: sweep, choice on
validation, JSON, figure and the docs section."""
import json
import os

import pytest
from script_loader import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script():
    return load_script('early_exit')


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


def test_every_study_names_shipped_models_and_its_own_folders():
    from lava_dtss.analysis import exit_study
    outs = set()
    for name in exit_study.EXIT_STUDIES:
        e = exit_study.exit_study(name)
        for model in e['models']:
            assert os.path.isfile(os.path.join(ROOT, 'netx_models', model + '.net')), (name, model)
        assert exit_study.exit_study_of(e['study'])['name'] == name
        outs.add(e['out'])
    assert len(outs) == len(exit_study.EXIT_STUDIES)                  # one folder per study: no mixed models
    assert exit_study.exit_study_of(os.path.join(ROOT, 'results', 'fashion-mnist-t8')) is None
    with pytest.raises(ValueError, match='unknown early-exit study'):
        exit_study.exit_study('cifar')


def test_chosen_threshold_found_in_the_folder_of_the_study_that_shipped_the_model():
    from lava_dtss.analysis.benchmark import chosen_threshold
    from lava_dtss.analysis.exit_study import exit_study
    out = exit_study('fashion-mnist-2026-11')['out']
    record = json.load(open(os.path.join(out, 'fmnist-2026-11_fixed-t4.json')))
    assert chosen_threshold('netx_models/fmnist-2026-11_fixed-t4.net') == record['policies']['margin']['chosen']['threshold']
    assert chosen_threshold('/elsewhere/no-such-model.net') is None


def test_early_exit_script_refuses_an_unknown_study(capsys):
    with pytest.raises(SystemExit):
        _script().main(['--study', 'cifar'])
    assert 'invalid choice' in capsys.readouterr().err
