"""Recorded command lines are runnable from the repository (issue 28): absolute
paths of the machine that ran them become relative to the repository, ``runs/...``
or ``OUT/<file>``; no committed result or model card holds one."""
import glob
import json
import os
import re

from lava_dtss.commands import OUT, ROOT, portable_command, portable_path


def test_absolute_paths_become_repository_relative_runs_or_out():
    assert portable_path(os.path.join(ROOT, 'netx_models', 'x.net')) == 'netx_models/x.net'
    assert portable_path('/data/exp/runs/attn2-e1/checkpoint.pt') == 'runs/attn2-e1/checkpoint.pt'
    assert portable_path('/data/exp/fp/model.net') == f'{OUT}/model.net'
    assert portable_path('runs/mine') == 'runs/mine'            # relative: as typed
    argv = [os.path.join(ROOT, 'scripts', 'train_slayer.py'), '--out', '/scratch/me/runs/a', '--lr', '1e-3',
            '--init-from=/scratch/me/runs/b/checkpoint.pt', '--config', 'attn_threshold=2.0',
            '--input', '/tmp/data.npy']
    assert portable_command(argv) == ('python scripts/train_slayer.py --out runs/a --lr 1e-3 '
                                      '--init-from=runs/b/checkpoint.pt --config attn_threshold=2.0 '
                                      f'--input {OUT}/data.npy')


def test_committed_results_and_cards_hold_no_absolute_path():
    machine = re.compile(r'(?<![\w.])/(work|tmp|home|root|scratch|Users)/')
    files = (glob.glob(os.path.join(ROOT, 'results', '**', '*.json'), recursive=True)
             + glob.glob(os.path.join(ROOT, 'results', '**', '*.md'), recursive=True)
             + glob.glob(os.path.join(ROOT, 'netx_models', '*.json')))
    assert len(files) > 50
    found = []
    for path in files:
        with open(path) as f:
            text = f.read()
        if path.endswith('.json'):
            json.loads(text)
        found += [f'{os.path.relpath(path, ROOT)}: {m.group(0)}' for m in machine.finditer(text)]
    assert not found, found[:5]
