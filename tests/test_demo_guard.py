"""The guard on the README demo: `python scripts/train_slayer.py` (the default
recipe, seed 0) trained in full, its accuracy and steps checked against bounds
derived from its spread (results/digits-demo/: seeds 0-4 on this project's
AVX-512 machine and seeds 0 and 3 with torch's kernels dispatched as AVX2,
another CPU's arithmetic; docs/dtss.md, "The digits demo"). A change that
degrades the default recipe (the collapse it replaced gave 91.4% / 89.2%) fails
here.

Bounds: each accuracy at least the lowest of those runs less 1 pp (3.6 test
images of 360), the average steps inside their range widened by one gate's
step (0.1 average steps) and below T_max / 2.
"""
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, 'results', 'digits-demo')
SEEDS = ('dtss-default',) + tuple(f'dtss-default-seed{s}' for s in (1, 2, 3, 4))
OTHER_ARITHMETIC = ('dtss-default-avx2', 'dtss-default-seed3-avx2')


def seed_spread():
    runs = [json.load(open(os.path.join(DEMO, s, 'metrics.json'))) for s in SEEDS + OTHER_ARITHMETIC]
    return {'float': min(r['test_accuracy'] for r in runs),
            'fixed': min(r['quantized_test_accuracy'] for r in runs),
            'steps': (min(r['avg_steps'] for r in runs), max(r['avg_steps'] for r in runs))}


def bounds():
    s = seed_spread()
    return {'float': s['float'] - 0.01, 'fixed': s['fixed'] - 0.01,
            'steps': (s['steps'][0] - 0.1, min(s['steps'][1] + 0.1, 4.0 - 1e-9))}


def test_the_committed_seeds_meet_the_demo_targets():
    """Every seed of the committed demo run (this machine's arithmetic): at least 97% float and
    fixed point, fewer than T_max / 2 = 4 average steps (issue 29's targets; no seed may collapse).
    The runs on another arithmetic are held to the steps target and to no collapse (90%): seed 0
    there fell below 97% (docs/dtss.md)."""
    for s in OTHER_ARITHMETIC:
        m = json.load(open(os.path.join(DEMO, s, 'metrics.json')))
        assert m['avg_steps'] < m['t_max'] / 2 and min(m['test_accuracy'], m['quantized_test_accuracy']) > 0.9, s
    for s in SEEDS:
        m = json.load(open(os.path.join(DEMO, s, 'metrics.json')))
        assert m['test_accuracy'] >= 0.97 and m['quantized_test_accuracy'] >= 0.97, (s, m['test_accuracy'])
        assert m['avg_steps'] < m['t_max'] / 2, (s, m['avg_steps'])
        assert m['command'].split()[:2] == ['python', 'scripts/train_slayer.py'], m['command']


@pytest.mark.demo_guard
def test_default_recipe_holds(tmp_path):
    """Train the default recipe (seed 0) as `python scripts/train_slayer.py` does and check it
    against the bounds from the seed spread."""
    from lava_dtss import train
    m = train(out=str(tmp_path / 'demo'))
    b = bounds()
    assert m['test_accuracy'] >= b['float'], f'float test accuracy {m["test_accuracy"]:.4f} < {b["float"]:.4f}'
    assert m['quantized_test_accuracy'] >= b['fixed'], \
        f'fixed-point test accuracy {m["quantized_test_accuracy"]:.4f} < {b["fixed"]:.4f}'
    lo, hi = b['steps']
    assert lo <= m['avg_steps'] <= hi, f'average steps {m["avg_steps"]:.2f} outside [{lo:.2f}, {hi:.2f}]'
