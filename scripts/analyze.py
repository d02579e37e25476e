#!/usr/bin/env python
"""Per-module sensitivity of a trained spiking ViT to fewer time steps.

    python scripts/analyze.py --snn runs/.../pretrain/checkpoint.pt --ann runs/.../ann/checkpoint.pt \\
        --out results/fashion-mnist/sensitivity.json

Two measures, per gated layer and per category (sps, qkv, attn, mlp):
1. distributions: the ANN twin's activations (clamp(x / threshold, 0, 1)) beside
   the SNN's spike rates over its first T steps (spikes / T, per neuron and
   image), for T = 1..T_max, and the 1-Wasserstein distance between them. W1,
   because a rate over T steps takes only T + 1 values while the ANN's activation
   is continuous: W1 is the mass-weighted distance the values must move, in the
   units of the activation (0..1), defined for any two distributions on [0, 1]
   without binning, and it falls to 0 exactly when the distributions agree
   (KL or JS divergences depend on the bins and diverge on disjoint supports).
   Also W1 to the SNN's own rates over all T_max steps (how far the first T
   steps are from the full run, independent of the twin's training).
2. accuracy on the validation split when only one category is cut to T steps
   (every other layer at T_max), on the trained SNN without retraining.

Writes one JSON (histograms, distances, accuracies); scripts/report.py plots it.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import wasserstein_distance  # noqa: E402

from lava_dtss.training import data  # noqa: E402
from lava_dtss.model.dtss import CATEGORIES  # noqa: E402
from lava_dtss.model import SpikingViT, ViTConfig  # noqa: E402
from lava_dtss.training import TrainingError, evaluate, load_checkpoint, write_json  # noqa: E402

BINS = np.linspace(0.0, 1.0, 21)     # 20 bins of 0.05 over the activation range
MAX_VALUES = 200_000                 # values per layer kept for W1 (a fixed random subset)


def load_model(path: str, neuron_impl: str):
    ckpt = load_checkpoint(path)
    args = ckpt.get('args') if isinstance(ckpt, dict) else None
    if not isinstance(args, dict) or 'config' not in ckpt or 'model' not in ckpt:
        raise TrainingError(f'{path} is not a checkpoint of scripts/train_slayer.py (no args, config or model)')
    if bool(args.get('ann')) != (neuron_impl == 'ann'):
        kind = 'an ANN twin (--ann)' if neuron_impl == 'ann' else 'a spiking model (trained without --ann)'
        raise TrainingError(f'{path} is not {kind}')
    try:
        model = SpikingViT(ViTConfig.from_dict(ckpt['config']), dtss=bool(ckpt.get('dtss')),
                           neuron_impl=neuron_impl)
        model.load_state_dict(ckpt['model'])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise TrainingError(f'{path}: its model state does not fit its configuration ({first})') from None
    return model.eval(), args


def subsample(values: torch.Tensor, rng) -> np.ndarray:
    v = values.reshape(-1).double().numpy()
    if v.size > MAX_VALUES:
        v = v[rng.choice(v.size, MAX_VALUES, replace=False)]
    return v


@torch.no_grad()
def layer_outputs(model, images):
    """{layer: output [N, C, H, W, T]} (before nothing is cut: the full run)."""
    return model.forward_with_spikes(images)[1]


def set_category_steps(model, category, steps):
    for _, m in model.gated_layers():
        m.gate.frozen_steps.fill_(steps if m.gate.category == category else 0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--snn', required=True, help='checkpoint of the trained SNN (fixed T = T_max or DTSS)')
    p.add_argument('--ann', required=True, help='checkpoint of its ANN twin (train_slayer.py --ann)')
    p.add_argument('--out', required=True, help='JSON file to write')
    p.add_argument('--images', type=int, default=1000, help='validation images for the distributions')
    p.add_argument('--data-dir', default=None)
    p.add_argument('--threads', type=int, default=None)
    args = p.parse_args(argv)
    if args.images < 1:
        p.error('--images must be >= 1')
    if args.threads:
        torch.set_num_threads(args.threads)
    snn, snn_args = load_model(args.snn, 'fast')
    ann, ann_args = load_model(args.ann, 'ann')
    if snn.cfg.name != ann.cfg.name:
        raise TrainingError(f'the SNN is preset {snn.cfg.name}, the ANN twin {ann.cfg.name}')
    dataset, val_size = snn_args.get('dataset'), int(snn_args.get('val_size') or 0)
    if not val_size:
        raise TrainingError(f'{args.snn} was trained without --val-size: the analysis needs the validation split')
    train = data.load_dataset(dataset, 'train', args.data_dir or snn_args.get('data_dir'))
    _, val = data.holdout_split(train, val_size)
    n = min(args.images, len(val))
    images = torch.stack([val[i][0] for i in range(n)])
    t_max = snn.cfg.t_max
    rng = np.random.default_rng(0)

    snn_out = layer_outputs(snn, images)
    ann_out = layer_outputs(ann, images)
    layers, cat_dist = {}, {c: {'w1_ann': {}, 'w1_tmax': {}} for c in CATEGORIES}
    for name, block in snn.gated_layers():
        s = snn_out[name]
        a = subsample(ann_out[name][..., 0], rng)
        full = subsample(s.mean(-1), np.random.default_rng(1))
        entry = {'category': block.gate.category, 'ann_hist': np.histogram(a, BINS)[0].tolist(),
                 'ann_mean': float(a.mean()), 'snn_hist': {}, 'w1_ann': {}, 'w1_tmax': {}}
        for t in range(1, t_max + 1):
            rate = subsample(s[..., :t].mean(-1), np.random.default_rng(1))
            entry['snn_hist'][t] = np.histogram(rate, BINS)[0].tolist()
            entry['w1_ann'][t] = float(wasserstein_distance(a, rate))
            entry['w1_tmax'][t] = float(wasserstein_distance(full, rate))
        layers[name] = entry
    for c in CATEGORIES:
        members = [e for e in layers.values() if e['category'] == c]
        for key in ('w1_ann', 'w1_tmax'):
            for t in range(1, t_max + 1):
                cat_dist[c][key][t] = float(np.mean([e[key][t] for e in members]))

    val_loader = data.make_loader(val, 256, shuffle=False, seed=0)
    set_category_steps(snn, None, 0)
    uncut = evaluate(snn, val_loader)['accuracy']
    cut = {}
    for c in CATEGORIES:
        cut[c] = {t_max: {'val_accuracy': uncut}}
        for t in range(1, t_max):
            set_category_steps(snn, c, t)
            cut[c][t] = {'val_accuracy': evaluate(snn, val_loader)['accuracy']}
            print(f'{c:5s} cut to T={t}: validation accuracy {cut[c][t]["val_accuracy"]:.4f} '
                  f'(uncut {uncut:.4f})', flush=True)
    set_category_steps(snn, None, 0)
    write_json(args.out, {
        'snn': args.snn, 'ann': args.ann, 'dataset': dataset, 'preset': snn.cfg.name, 't_max': t_max,
        'images': n, 'bins': BINS.tolist(), 'distance': '1-Wasserstein (scipy.stats.wasserstein_distance)',
        'layers': layers, 'categories': cat_dist,
        'uncut': {'val_accuracy': uncut}, 'category_cut': cut,
        'command': ' '.join(['python'] + sys.argv)})
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (TrainingError, data.DatasetError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
