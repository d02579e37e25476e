"""Per-module sensitivity of a trained spiking ViT to fewer time steps.

    from lava_dtss.analysis.sensitivity import sensitivity
    result = sensitivity('runs/.../pretrain/checkpoint.pt', 'runs/.../ann/checkpoint.pt')

(command line: ``python scripts/analyze.py --snn ... --ann ... --out sensitivity.json``)

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
   (every other layer at T_max), on the trained SNN without retraining, its
   BatchNorm statistics re-estimated for each cut on the same training images
   as every study arm (``recalibrate_batchnorm``; ``bn_calibration=0`` keeps the
   checkpoint's statistics), so that the ranking compares like with like.

Returns one dict (histograms, distances, accuracies), which the command line
writes as JSON and ``lava_dtss.analysis.report`` plots.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from ..model.dtss import CATEGORIES, upgrade_gate_state
from ..model.presets import ViTConfig
from ..model.vit import SpikingViT
from ..training import data
from ..training.checkpoints import TrainingError, evaluate, load_checkpoint, recalibrate_batchnorm

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
        config = ViTConfig.from_dict(ckpt['config'])
        model = SpikingViT(config, dtss=bool(ckpt.get('dtss')), neuron_impl=neuron_impl)
        model.load_state_dict(upgrade_gate_state(ckpt['model'], config.t_max))   # gates of the earlier formulation
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


def sensitivity(snn: str, ann: str, images: int = 1000, data_dir: str = None, command: str = '',
                log=print, bn_calibration: int = 2048) -> dict:
    """Both measures for the SNN checkpoint ``snn`` (fixed T = T_max or DTSS,
    trained with a validation split) and its ANN twin ``ann`` (``train(ann=True)``)
    on ``images`` validation images; ``log`` gets a line per cut. BatchNorm is
    re-estimated on ``bn_calibration`` training images (outside the validation
    split) for every cut, as the study does for every arm. The dict
    ``scripts/analyze.py`` writes (``command`` recorded in it)."""
    if images < 1:
        raise ValueError('--images must be >= 1')
    if bn_calibration < 0:
        raise ValueError(f'--bn-calibration must be >= 0, got {bn_calibration}')
    snn_path, ann_path = snn, ann
    snn, snn_args = load_model(snn_path, 'fast')
    ann, ann_args = load_model(ann_path, 'ann')
    if snn.cfg.name != ann.cfg.name:
        raise TrainingError(f'the SNN is preset {snn.cfg.name}, the ANN twin {ann.cfg.name}')
    dataset, val_size = snn_args.get('dataset'), int(snn_args.get('val_size') or 0)
    if not val_size:
        raise TrainingError(f'{snn_path} was trained without --val-size: the analysis needs the validation split')
    train = data.load_dataset(dataset, 'train', data_dir or snn_args.get('data_dir'))
    train, val = data.holdout_split(train, val_size)
    n = min(images, len(val))
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
    trained = {k: v.clone() for k, v in snn.state_dict().items()}

    def accuracy(category, steps):
        """Validation accuracy with ``category`` cut to ``steps`` (None: uncut), BatchNorm
        re-estimated for it (the training loop's images: a fixed-seed loader); the
        trained state is restored after."""
        set_category_steps(snn, category, steps)
        if bn_calibration:
            recalibrate_batchnorm(snn, data.make_loader(train, 256, shuffle=True, seed=12345), bn_calibration)
        acc = evaluate(snn, val_loader)['accuracy']
        snn.load_state_dict(trained)
        return acc

    uncut = accuracy(None, 0)
    cut = {}
    for c in CATEGORIES:
        cut[c] = {t_max: {'val_accuracy': uncut}}
        for t in range(1, t_max):
            cut[c][t] = {'val_accuracy': accuracy(c, t)}
            log(f'{c:5s} cut to T={t}: validation accuracy {cut[c][t]["val_accuracy"]:.4f} '
                f'(uncut {uncut:.4f})')
    set_category_steps(snn, None, 0)
    return {
        'snn': snn_path, 'ann': ann_path, 'dataset': dataset, 'preset': snn.cfg.name, 't_max': t_max,
        'images': n, 'bins': BINS.tolist(), 'distance': '1-Wasserstein (scipy.stats.wasserstein_distance)',
        'layers': layers, 'categories': cat_dist,
        'uncut': {'val_accuracy': uncut}, 'category_cut': cut, 'bn_calibration': bn_calibration,
        'command': command}
