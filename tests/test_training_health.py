"""The training-health measurement (lava_dtss.analysis.training_health and
scripts/diagnose.py, docs/training.md): every column measures what it says."""
import json
import os
import subprocess
import sys

import pytest
import torch

import lava_dtss
from lava_dtss.analysis.training_health import layer_health, levers_markdown
from lava_dtss.model import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_silent_and_saturated_layers_are_seen():
    """A layer pushed far below threshold never fires and gets no surrogate
    gradient; one pushed far above fires at every step; the others are in between."""
    torch.manual_seed(0)
    model = build_model('tiny', dtss=False)
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    with torch.no_grad():
        model.blocks[0].mlp.fc1.norm.bias.fill_(-50.0)    # current ~ -50: silent
        model.blocks[0].ssa.v.norm.bias.fill_(50.0)        # current ~ +50: fires every step
    rows = layer_health(model, x, y)['layers']
    assert set(rows) == {n for n, _ in model.gated_layers()}
    silent, loud = rows['blocks.0.mlp.fc1'], rows['blocks.0.ssa.v']
    assert silent['never_fire'] == 1.0 and silent['firing_rate'] == 0.0 and silent['surrogate_active'] == 0.0
    assert loud['always_fire'] == 1.0 and loud['firing_rate'] == 1.0
    assert 0 < rows['sps.0']['firing_rate'] < 1 and 0 < rows['sps.0']['surrogate_active'] < 1
    assert rows['blocks.0.ssa.attn']['weight_grad_rel'] is None       # attention has no weights
    assert all(r['grad_out_rms'] is not None and r['grad_out_rms'] >= 0 for r in rows.values())
    assert rows['blocks.0.mlp.fc1']['grad_out_rms'] > 0                 # fc2 still passes gradient back


def test_diagnose_cli_on_a_checkpoint(tmp_path):
    out = str(tmp_path / 'run')
    lava_dtss.train(out=out, epochs=1, max_batches=2, batch_size=16, val_size=200, no_export=True,
                    freeze_scores=1, bn_calibration=64)
    report = str(tmp_path / 'health.json')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'diagnose.py'),
                           os.path.join(out, 'checkpoint.pt'), '--images', '64', '--export',
                           '--val-images', '100', '--json', report],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.load(open(report))
    assert data['export']['images'] == 100
    assert all(0.0 <= v <= 1.0 for v in data['export']['spikes_equal'].values())
    assert 'validation: float' in proc.stdout
    bad = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'diagnose.py'), str(tmp_path / 'none.pt')],
                         capture_output=True, text=True, env=env, timeout=120)
    errors = [line for line in bad.stderr.splitlines() if 'CUDA' not in line]   # torch's note on import
    assert bad.returncode == 1 and len(errors) == 1 and errors[0].startswith('error:') and 'none.pt' in errors[0]


def test_lever_table_lists_each_run(tmp_path):
    for name, val in (('a', 0.8), ('b', 0.9)):
        os.makedirs(tmp_path / name)
        json.dump({'epochs': 1, 'val_accuracy': val, 'test_accuracy': val - 0.01,
                   'command': f'python scripts/train_slayer.py --fixed-t 4 --config attn_threshold={val}'},
                  open(tmp_path / name / 'metrics.json', 'w'))
        (tmp_path / name / 'log.jsonl').write_text(json.dumps({'epoch': 1, 'train_acc': 0.5}) + '\n')
    table = levers_markdown(str(tmp_path)).splitlines()
    assert len(table) == 4 and '| a |' in table[2] and '90.00%' in table[3] and 'attn_threshold=0.9' in table[3]


def test_lever_table_groups_seeds_beside_the_ann_twin(tmp_path):
    """Runs of one setting with several seeds: mean +- sd of validation, test and the
    exported fixed-point test accuracy (export.json), and the gap to the ANN twin
    of the same settings."""
    runs = {'s0': ('--fixed-t 4 --seed 0', 0, 0.90, 0.899), 's1': ('--fixed-t 4 --seed 1', 1, 0.88, None),
            'twin': ('--ann', 0, 0.92, None)}
    for name, (extra, seed, test, q) in runs.items():
        os.makedirs(tmp_path / name)
        json.dump({'epochs': 8, 'seed': seed, 'val_accuracy': test, 'test_accuracy': test,
                   'command': f'python scripts/train_slayer.py {extra} --epochs 8 --config attn_threshold=2.0'},
                  open(tmp_path / name / 'metrics.json', 'w'))
        (tmp_path / name / 'log.jsonl').write_text(json.dumps({'epoch': 8, 'train_acc': 0.9}) + '\n')
        if q is not None:
            json.dump({'quantized_test_accuracy': q}, open(tmp_path / name / 'export.json', 'w'))
    table = levers_markdown(str(tmp_path)).splitlines()
    assert '89.90%' in table[2]                         # s0's fixed-point column
    seeds = [r for r in table if r.startswith('| `--fixed-t 4')]
    assert len(seeds) == 1, table
    row = seeds[0]
    assert '| 2 |' in row and '89.00 +- 1.41%' in row and '89.90 +- 0.00% (1)' in row
    assert '92.00%' in row and '-3.00 pp' in row
