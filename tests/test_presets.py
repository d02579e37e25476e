"""Presets train their own recipes; shipped cards come from today's recipe and
carry the early-exit thresholds run_lava.py uses."""
import glob
import json
import os
import shlex
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'scripts'))

import run_lava  # noqa: E402
import train_slayer  # noqa: E402
from lava_dtss.analysis import study  # noqa: E402
from lava_dtss.deploy import cards  # noqa: E402
from lava_dtss.model.presets import GENERIC_TRAINING, PRESETS, TRAINING, get_config  # noqa: E402
from lava_dtss.training.loop import TrainConfig, recipe_fingerprint, resolve  # noqa: E402


def test_fmnist_preset_is_the_recipe_that_learned():
    """--dataset fashion-mnist alone: issue 14's recipe (docs/training.md) and attention threshold 2."""
    args = train_slayer.parse_args(['--dataset', 'fashion-mnist'])
    assert (args.epochs, args.lr, args.lr_schedule, args.weight_decay) == (8, 3e-3, 'step', 0.01)
    assert get_config('fmnist').attn_threshold == 2.0
    # an option given on the command line wins over the preset's recipe
    args = train_slayer.parse_args(['--dataset', 'fashion-mnist', '--epochs', '3', '--weight-decay', '0.1'])
    assert (args.epochs, args.weight_decay, args.lr_schedule) == (3, 0.1, 'step')


def test_every_preset_resolves_a_complete_recipe():
    for preset in PRESETS:
        args = resolve(TrainConfig(preset=preset, dataset='digits' if preset == 'tiny' else
                                   {'fmnist': 'fashion-mnist', 'spikformer-4-384': 'cifar10',
                                    'spikformer-8-768': 'imagenet'}[preset]))
        recipe = TRAINING.get(preset, GENERIC_TRAINING)
        for field in GENERIC_TRAINING:
            if field == 'mask_categories':   # resolved to {category: weight}
                given = dict(item.partition('=')[::2] for item in recipe[field].split(','))
                assert args.mask_weights == {c: float(w or 1) for c, w in given.items()}, preset
            else:
                assert getattr(args, field) == recipe[field], (preset, field)


def test_first_study_pins_the_settings_it_was_run_with():
    """The 2026-11 study ran before the fmnist preset took issue 14's recipe: its arms must resolve to
    Spikformer's attention threshold 0.5 and weight decay 0.1, whatever the preset says today."""
    s = study.STUDIES['fashion-mnist-2026-11']
    for stage in ('pretrain', 'finetune'):
        args = train_slayer.parse_args(['--dataset', 'fashion-mnist'] + s[stage])
        assert args.preset_fields == {'attn_threshold': 0.5} and args.weight_decay == 0.1, stage
    for name in ('fashion-mnist', 'fashion-mnist-t8'):
        args = train_slayer.parse_args(['--dataset', 'fashion-mnist'] + study.STUDIES[name]['finetune'])
        assert args.preset_fields == {'attn_threshold': 2.0} and args.weight_decay == 0.01


SHIPPED = sorted(glob.glob(os.path.join(ROOT, 'netx_models', '*.json')))
CURRENT = [p for p in SHIPPED if not os.path.basename(p).startswith('fmnist-2026-11')]


@pytest.mark.parametrize('card', CURRENT, ids=os.path.basename)
def test_shipped_card_comes_from_todays_recipe(card):
    """Each shipped card (but the first study's, kept as history) records the fingerprint of the
    recipe that made it; its command, resolved with today's defaults, must give the same one. A
    change of a default, a preset or the gate's formulation fails here until the model is remade."""
    c = json.load(open(card))
    assert 'recipe_fingerprint' in c, f'{card} has no recipe fingerprint: regenerate it ({c.get("command")})'
    argv = shlex.split(c['command'])
    assert argv[:2] == ['python', 'scripts/train_slayer.py'], c['command']
    today = recipe_fingerprint(train_slayer.parse_args(argv[2:]))
    assert today == c['recipe_fingerprint'], (
        f'{os.path.basename(card)} was made by a recipe that has since changed (its fingerprint '
        f'{c["recipe_fingerprint"]}, today\'s {today}): re-run `{c["command"]}` and ship its model')


def test_fingerprint_follows_the_recipe_not_the_plumbing():
    base = recipe_fingerprint(TrainConfig())
    assert recipe_fingerprint(TrainConfig(out='elsewhere', threads=2, eval_every=7)) == base
    assert recipe_fingerprint(TrainConfig(lambda_m=0.5)) != base
    assert recipe_fingerprint(TrainConfig(preset_fields=['attn_threshold=1.5'])) != base


def test_run_lava_takes_the_margin_threshold_from_the_card(tmp_path, capsys):
    src = os.path.join(ROOT, 'netx_models', 'fmnist_dtss-default-l0.5')
    model = str(tmp_path / 'm.net')
    shutil.copy(src + '.net', model)
    shutil.copy(src + '.json', tmp_path / 'm.json')
    expected = json.load(open(src + '.json'))['early_exit']['policies']['margin']['threshold']
    args = run_lava.parse_args(['--model', model, '--exit-policy', 'margin'])
    assert args.exit_threshold == expected and 'the card' in args.exit_threshold_source
    # a threshold on the command line wins
    assert run_lava.parse_args(['--model', model, '--exit-policy', 'margin',
                                '--exit-threshold', '5']).exit_threshold == 5
    # a card without thresholds, and a file without a card: one line saying how to get one
    card = json.load(open(tmp_path / 'm.json'))
    del card['early_exit']
    (tmp_path / 'm.json').write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r'holds none for margin.*scripts/early_exit.py'):
        run_lava.parse_args(['--model', model, '--exit-policy', 'margin'])
    os.unlink(tmp_path / 'm.json')
    with pytest.raises(ValueError, match=r'no model card.*scripts/early_exit.py'):
        run_lava.parse_args(['--model', model, '--exit-policy', 'margin'])


def test_exit_thresholds_recorded_in_a_card(tmp_path):
    model = str(tmp_path / 'm.net')
    open(model, 'wb').close()
    (tmp_path / 'm.json').write_text(json.dumps({'preset': 'tiny'}))
    record = json.load(open(os.path.join(ROOT, 'results', 'early-exit', 'fmnist_fixed-t4.json')))
    card = cards.record_exit_thresholds(model, record, 'python scripts/early_exit.py')
    assert card['preset'] == 'tiny'
    assert card['early_exit']['policies']['margin']['threshold'] == record['policies']['margin']['chosen']['threshold']
    assert json.load(open(tmp_path / 'm.json')) == card
    (tmp_path / 'm.json').write_text('[1, 2]')
    with pytest.raises(ValueError, match='expected a JSON object'):
        cards.read_card(model)


@pytest.mark.parametrize('seed', (0, 1, 2))
def test_fmnist_preset_reproduces_the_measured_recipe(seed):
    """The fmnist preset's docstring cites issue 14's runs (options given by hand then): with
    today's defaults the preset alone resolves to the same recipe."""
    name = 'snn-attn2-wd0.01-e8' + (f'-seed{seed}' if seed else '')
    measured = json.load(open(os.path.join(ROOT, 'results', 'fashion-mnist-levers', name, 'metrics.json')))
    then = train_slayer.parse_args(shlex.split(measured['command'])[2:])
    now = train_slayer.parse_args(['--dataset', 'fashion-mnist', '--val-size', '5000', '--fixed-t', '4',
                                   '--no-export', '--seed', str(seed)])
    assert recipe_fingerprint(then) == recipe_fingerprint(now)
