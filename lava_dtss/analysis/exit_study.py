"""Early exit on shipped models: accuracy against average steps for every exit
policy and threshold, the threshold chosen on validation for an accuracy
budget, test reported at it (``scripts/early_exit.py``).

Per model, one JSON (``results/early-exit/<name>.json``; the first study's:
``results/early-exit-2026-11/``, ``EXIT_STUDIES``): full-window
validation and test accuracy of the exported fixed-point model, the softmax
temperature fitted on validation, per policy the sweep (threshold, validation
and test accuracy, average steps: window steps to the exit, per-layer plain and
weighted by synaptic operations per step), the chosen threshold and its test
figures, and the measured synaptic operations and energy per test image with
and without exit (45 nm model, ``energy.py``).
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from ..commands import ROOT
from ..deploy import early_exit as ee
from ..deploy.export import deployed_model
from ..deploy.netx_file import read_netx
from ..deploy.reference import float32_is_exact, readout_steps
from ..training import data
from .energy import snn_energy

# Early exit per study: the models it shipped (netx_models/<name>.net), the folder of their JSONs, the study's
# results (its fixed-T and DTSS points go on the figure), and its page and figures (the early-exit section lives there)
EXIT_STUDIES = {
    'fashion-mnist': dict(models=('fmnist_fixed-t4', 'fmnist_dtss-default-l0.5', 'digits_tiny_dtss'),
                          out='results/early-exit', study='results/fashion-mnist', doc='docs/results.md',
                          figures='docs/figures'),
    'fashion-mnist-2026-11': dict(models=('fmnist-2026-11_fixed-t4', 'fmnist-2026-11_dtss-default-l1',
                                          'digits_tiny_dtss'),
                                  out='results/early-exit-2026-11', study='results/fashion-mnist-2026-11',
                                  doc='docs/results-2026-11.md', figures='docs/figures-2026-11'),
}


DEFAULT_EXIT_STUDY = 'fashion-mnist'   # scripts/early_exit.py without --study


def exit_study(name: str) -> dict:
    """The entry ``name`` of ``EXIT_STUDIES`` with absolute paths, its name and
    the command that writes its folder (``command``)."""
    if name not in EXIT_STUDIES:
        raise ValueError(f'unknown early-exit study {name!r}; known: {", ".join(EXIT_STUDIES)}')
    e = dict(EXIT_STUDIES[name], name=name,
             command='python scripts/early_exit.py' + ('' if name == DEFAULT_EXIT_STUDY else f' --study {name}'))
    for k in ('out', 'study', 'doc', 'figures'):
        e[k] = os.path.join(ROOT, e[k])
    return e


def exit_study_of(results: str):
    """The early-exit entry (:func:`exit_study`) of the study whose results folder
    is ``results``, or None."""
    for name in EXIT_STUDIES:
        e = exit_study(name)
        if os.path.abspath(results) == e['study']:
            return e
    return None


def chosen_record(model: str):
    """The early-exit JSON of the network file ``model`` (by its name, in the
    folder of every study that shipped it: the first found), or None."""
    name = os.path.splitext(os.path.basename(model))[0]
    for study in EXIT_STUDIES:
        path = os.path.join(exit_study(study)['out'], name + '.json')
        if os.path.isfile(path):
            return json.load(open(path))
    return None


VAL_SIZE = {'fashion-mnist': 5000, 'digits': 200}   # the study's validation splits (seed 0)


def split_images(dataset: str, data_dir: str = None, val_size: int = None):
    """``(val_images, val_labels, test_images, test_labels)``: validation carved
    from the training set (``data.holdout_split``, seed 0) and the test set."""
    val_size = val_size or VAL_SIZE.get(dataset, 5000)
    _, val = data.holdout_split(data.load_dataset(dataset, 'train', data_dir), val_size)
    test = data.load_dataset(dataset, 'test', data_dir)

    def stack(ds):
        loader = torch.utils.data.DataLoader(ds, batch_size=1024, shuffle=False)
        xs, ys = zip(*loader)
        return torch.cat(xs), torch.cat(ys).numpy()
    return (*stack(val), *stack(test))


def model_exit_study(path: str, data_dir: str = None, budget_pp: float = 0.5,
                     val_size: int = None, num_test: int = None, log=print) -> dict:
    """The early-exit record of one network file (module docstring)."""
    spec = read_netx(path)
    ee.check_readout(spec, path)
    dataset = spec.meta.get('dataset') or 'digits'
    model = deployed_model(spec, torch.float32 if float32_is_exact(spec) else torch.float64)
    report = model.time_step_report()
    active, weights = report['active_steps'], report['flops_per_step']
    xv, yv, xt, yt = split_images(dataset, data_dir, val_size)
    if num_test:
        xt, yt = xt[:num_test], yt[:num_test]
    log(f'{os.path.basename(path)}: readout sums of {len(yv)} validation and {len(yt)} test images ...')
    zv, _ = readout_steps(spec, xv, model=model, fingerprints=False)
    zt, _ = readout_steps(spec, xt, model=model, fingerprints=False)
    t_max = zv.shape[-1]
    full_val = float((zv[:, :, -1].argmax(1) == yv).mean())
    full_test = float((zt[:, :, -1].argmax(1) == yt).mean())
    tau = ee.calibrate_temperature(zv[:, :, -1] / t_max, yv)
    full_steps = ee.average_steps(np.full(len(yt), t_max), active, weights)
    out = {'model': os.path.relpath(path, ROOT), 'dataset': dataset, 't_max': t_max,
           'val_size': len(yv), 'test_size': len(yt), 'budget_pp': budget_pp,
           'full_window': {'val_accuracy': full_val, 'test_accuracy': full_test, 'steps': full_steps},
           'active_steps': active, 'temperature': tau, 'policies': {}}
    first = model.gated_layers()[0][0]
    for policy in ('margin', 'confidence'):
        stat_v = ee.statistic(zv, policy, tau)
        thresholds = ee.candidate_thresholds(stat_v, policy, limit=100)
        val_rows = ee.sweep(zv, yv, policy, thresholds, active, weights, tau)
        test_rows = ee.sweep(zt, yt, policy, thresholds, active, weights, tau)
        rows = [{'threshold': v['threshold'], 'val_accuracy': v['accuracy'], 'val_steps': v['steps'],
                 'test_accuracy': t['accuracy'], 'test_steps': t['steps']}
                for v, t in zip(val_rows, test_rows)]
        best = ee.choose_threshold(val_rows, full_val, budget_pp)
        entry = {'sweep': _columns(rows), 'chosen': None}
        if best is not None:
            i = val_rows.index(best)
            chosen = dict(rows[i])
            steps = ee.exit_steps(zt, policy, best['threshold'], tau)
            chosen['test_fewer_steps_pct'] = 100 * (1 - chosen['test_steps']['plain'] / full_steps['plain'])
            chosen['test_accuracy_change_pp'] = 100 * (chosen['test_accuracy'] - full_test)
            chosen['energy'] = _energy(spec, xt, steps, t_max, first)
            entry['chosen'] = chosen
            log(f'  {policy}: threshold {best["threshold"]:.6g} (validation {100 * best["accuracy"]:.2f}% '
                f'at {best["steps"]["exit"]:.3f} steps); test {100 * chosen["test_accuracy"]:.2f}% vs '
                f'{100 * full_test:.2f}% full, {chosen["test_steps"]["plain"]:.3f} average steps '
                f'({chosen["test_fewer_steps_pct"]:.1f}% fewer)')
        else:
            log(f'  {policy}: no threshold within {budget_pp} pp on validation')
        out['policies'][policy] = entry
    return out


def _columns(rows: list) -> dict:
    """Sweep rows as columns (a small JSON): ``{'threshold': [...], 'val_accuracy':
    [...], 'val_steps': {'exit': [...], ...}, ...}``, steps rounded to 1e-4."""
    out = {}
    for key, value in rows[0].items():
        if isinstance(value, dict):
            out[key] = {k: [round(r[key][k], 4) for r in rows] for k in value}
        else:
            out[key] = [r[key] for r in rows]
    return out


def _energy(spec, images, steps, t_max, first_layer) -> dict:
    """Synaptic operations and energy per image with exits ``steps`` and without."""
    n = images.shape[0]
    res = {}
    for label, s in (('exit', steps), ('full', np.full(n, t_max))):
        ops, upd = ee.exit_operations(spec, images, s)
        per = {k: v / n for k, v in ops.items()}
        e = snn_energy(per, {k: v / n for k, v in upd.items()}, first_layer)['total']
        res[label] = {'synops_per_image': sum(per.values()), 'energy_pj': e}
    return res


def plot(records: dict, fixed_points: dict, path: str):
    """Test accuracy against average steps (plain) per model and policy, the
    chosen thresholds marked; ``fixed_points``: extra labelled ``(steps, accuracy)``
    series (the study's fixed-T and DTSS arms)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = list(records)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        r = records[name]
        for policy, style in (('margin', '-'), ('confidence', '--')):
            sw = r['policies'][policy]['sweep']
            ax.plot(sw['test_steps']['plain'], [100 * a for a in sw['test_accuracy']],
                    style, label=f'exit: {policy}', lw=1)
            c = r['policies'][policy]['chosen']
            if c:
                ax.plot(c['test_steps']['plain'], 100 * c['test_accuracy'], 'o', ms=7,
                        label=f'{policy}, chosen on val')
        full = r['full_window']
        ax.plot(full['steps']['plain'], 100 * full['test_accuracy'], 'k*', ms=10, label='full window')
        for label, pts in fixed_points.get(r['dataset'], {}).items():
            xs, ys = zip(*sorted(pts))
            ax.plot(xs, [100 * y for y in ys], 's:' if 'fixed' in label else '^', label=label, ms=5)
        ax.set_ylim(100 * full['test_accuracy'] - 8, 100 * full['test_accuracy'] + 2)
        ax.set_xlabel('average steps per layer (plain, with exits)')
        ax.set_ylabel('test accuracy (%), fixed point')
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + '.tmp.png'
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def study_points(results: str) -> dict:
    """``{dataset: {label: [(avg steps, fixed-point test accuracy)]}}`` of the
    Fashion-MNIST study in ``results`` (seed-0 fixed-T and DTSS arms)."""
    fixed, dtss = [], []
    if os.path.isdir(results):
        for arm in sorted(os.listdir(results)):
            p = os.path.join(results, arm, 'metrics.json')
            if 'seed' in arm or not os.path.isfile(p):
                continue
            m = json.load(open(p))
            if m.get('ann') or m.get('quantized_test_accuracy') is None:
                continue
            if arm.startswith('fixed-t'):
                fixed.append((m['avg_steps'], m['quantized_test_accuracy']))
            elif arm.startswith(('dtss', 'alloc')):
                dtss.append((m['avg_steps'], m['quantized_test_accuracy']))
    pts = {}
    if fixed:
        pts['study: fixed T'] = fixed
    if dtss:
        pts['study: DTSS arms'] = dtss
    return {'fashion-mnist': pts}


SECTION_START = '<!-- early exit: generated by `python scripts/early_exit.py` (and scripts/report.py) -->'
SECTION_END = '<!-- end of early exit -->'


def markdown_section(folder: str, figure_rel: str = 'figures/early_exit.png',
                     command: str = 'python scripts/early_exit.py') -> list:
    """Lines of the early-exit section of docs/results.md from the JSONs in
    ``folder`` (written by ``command``): per model and policy the
    threshold chosen on validation and its test figures, energy with and without
    exit, and the Lava comparisons (``lava-*.json``, ``scripts/benchmark.py
    --exit-json``); ``[]`` when there are none."""
    rel = os.path.relpath(folder, ROOT)
    if not os.path.isdir(folder):
        return []
    recs = {f[:-5]: json.load(open(os.path.join(folder, f))) for f in sorted(os.listdir(folder))
            if f.endswith('.json') and not f.startswith('lava-')}
    lava = {f[5:-5]: json.load(open(os.path.join(folder, f))) for f in sorted(os.listdir(folder))
            if f.startswith('lava-') and f.endswith('.json')}
    if not recs:
        return []
    budget = next(iter(recs.values()))['budget_pp']
    L = [SECTION_START, '## Per-sample early exit', '',
         'After every window step the readout\'s accumulated integer logit sums '
         '`z = sum_t (T_max W x_t + b)` decide whether a sample stops (every layer stops with it; DTSS '
         'steps stay an upper bound): **margin** `top1(z) - top2(z) >= threshold` (integers, what the Lava '
         'readout computes) or **confidence** `max softmax(z / ((t+1) T_max tau)) >= threshold` (tau '
         'fitted on validation; training side only). The threshold is the one with the fewest average '
         f'steps whose validation accuracy is within {budget} pp of the full window\'s, on the '
         'validation split carved from the training set (Fashion-MNIST: the study\'s 5,000 images, seed 0; '
         'digits: 200 images of its training set, which the shipped digits model was trained on); test is '
         'reported at it. Average steps: window steps to the exit (exit), per-layer steps `min(T_l, exit)` '
         'averaged over layers (plain) and weighted by each layer\'s synaptic operations per step '
         '(weighted). Energy: counted operations of the fixed-point model on the test images with these '
         'exits, 45 nm model (docs/energy.md).', '',
         f'![early exit](' + figure_rel + ')', '',
         f'`{command}` (writes `{rel}/*.json` and the figure)', '',
         '| model | policy | threshold | val % (full) | test % (full) | test change pp | exit steps | '
         'plain steps (full) | weighted steps (full) | fewer plain steps | energy nJ exit / full |',
         '|---|---|---|---|---|---|---|---|---|---|---|']
    for name, r in recs.items():
        full = r['full_window']
        for policy, p in r['policies'].items():
            c = p['chosen']
            if not c:
                L.append(f'| {name} | {policy} | none within budget | '
                         f'| {100 * full["test_accuracy"]:.2f} | | | | | | |')
                continue
            e = {k: v['energy_pj']['total_pj'] / 1e3 for k, v in c['energy'].items()}   # nJ
            thr = f'{c["threshold"]:.4g}' if policy == 'confidence' else str(c['threshold'])
            L.append(f'| {name} | {policy} | {thr} | {100 * c["val_accuracy"]:.2f} ({100 * full["val_accuracy"]:.2f}) '
                     f'| {100 * c["test_accuracy"]:.2f} ({100 * full["test_accuracy"]:.2f}) '
                     f'| {c["test_accuracy_change_pp"]:+.2f} | {c["test_steps"]["exit"]:.3f} '
                     f'| {c["test_steps"]["plain"]:.3f} ({full["steps"]["plain"]:.3f}) '
                     f'| {c["test_steps"]["weighted"]:.3f} ({full["steps"]["weighted"]:.3f}) '
                     f'| {c["test_fewer_steps_pct"]:.1f}% '
                     f'| {e["exit"]:.1f} / {e["full"]:.1f} |')
    L.append('')
    for name, r in recs.items():
        if r['dataset'] != 'fashion-mnist':
            continue
        parts, met = [], []
        for pol, p in r['policies'].items():
            c = p['chosen']
            if not c:
                continue
            fewer = 1 - c['test_steps']['exit'] / r['t_max']
            fewer_plain = 1 - c['test_steps']['plain'] / r['t_max']
            parts.append(f'{pol} {100 * fewer:.1f}% fewer window steps than T_max = {r["t_max"]} '
                         f'({100 * fewer_plain:.1f}% fewer per-layer steps) at {c["test_accuracy_change_pp"]:+.2f} pp')
            if fewer >= 0.5 and c['test_accuracy_change_pp'] >= -0.5:
                met.append(pol)
        L.append(f'- Target (>= 50% fewer average steps than T_max within 0.5 pp of the full-window test '
                 f'accuracy, threshold chosen on validation), {name}: ' + '; '.join(parts) + ': '
                 + (f'met by {", ".join(met)}.' if met else 'not met.'))
    if lava:
        L += ['', '### In Lava, with continuous batching', '',
              '`python scripts/benchmark.py --skip-train --skip-lava --skip-stock --model MODEL '
              f'--exit-samples 10000 --exit-json {rel}/lava-NAME.json`: the windowed run without '
              'exit and the continuous-batching run with the chosen margin threshold, alternately; logits and '
              'exit steps of every exit run equal to the training-side reference; wall time excludes start-up.', '',
              '| model | images | B | threshold | avg steps | Lava steps without / with | wall s without / with '
              '| fall: avg steps / Lava steps / wall | Lava fall / avg fall | wall fall / avg fall |',
              '|---|---|---|---|---|---|---|---|---|---|']
        for name, b in lava.items():
            f = b['fall']
            L.append(f'| {name} | {b["samples"]} | {b["batch"]} | {b["threshold"]} | {b["avg_steps"]:.3f} '
                     f'| {b["lava_steps"]["without exit"]} / {b["lava_steps"]["with exit"]} '
                     f'| {b["wall_s"]["without exit"]:.1f} / {b["wall_s"]["with exit"]:.1f} '
                     f'| {100 * f["average steps"]:.1f}% / {100 * f["Lava steps"]:.1f}% / {100 * f["wall time"]:.1f}% '
                     f'| {f["Lava steps"] / f["average steps"]:.2f} | {f["wall time"] / f["average steps"]:.2f} |')
    L += ['', SECTION_END, '']
    return L


def write_section(doc: str, lines: list):
    """Replace the early-exit section of ``doc`` (between the markers) with
    ``lines``, or append it; atomic."""
    from ..training.checkpoints import atomic_write
    text = open(doc).read() if os.path.isfile(doc) else ''
    if SECTION_START in text and SECTION_END in text:
        a, b = text.index(SECTION_START), text.index(SECTION_END) + len(SECTION_END)
        text = text[:a] + '\n'.join(lines).strip('\n') + text[b:]
    else:
        text = text.rstrip('\n') + '\n\n' + '\n'.join(lines)
    atomic_write(doc, lambda f: f.write(text), mode='w')
