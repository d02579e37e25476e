#!/usr/bin/env python
"""Tables and plots of the DTSS study from the committed results (never trains).

    python scripts/report.py                       # results/fashion-mnist -> docs/results.md, docs/figures/
    python scripts/report.py --results results/digits-quick --doc /tmp/results.md --figures /tmp/fig

Reads results/<study>/<arm>/metrics.json (scripts/study.py), sensitivity.json
(scripts/analyze.py), headline.json and lava-*.json (scripts/run_lava.py --json),
and writes the Markdown page with its PNG figures.
"""
import argparse
import glob
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import matplotlib  # noqa: E402
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lava_dtss.dtss import CATEGORIES  # noqa: E402
from lava_dtss.energy import EnergyModel, ann_energy, snn_energy  # noqa: E402
from lava_dtss.training import atomic_write  # noqa: E402

ISO_PP = 0.5


class ReportError(RuntimeError):
    pass


def load_arms(results):
    arms = {}
    for path in sorted(glob.glob(os.path.join(results, '*', 'metrics.json'))):
        with open(path) as f:
            arms[os.path.basename(os.path.dirname(path))] = json.load(f)
    if not arms:
        raise ReportError(f'no results under {results} (expected <arm>/metrics.json from scripts/study.py)')
    return arms


def read_json(path):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def pct(x):
    return '' if x is None else f'{100 * x:.2f}'


def seeds_of(arms, base):
    """Metrics of arm ``base`` (seed 0) and its ``base-seedN`` repeats."""
    return [arms[base]] + [m for n, m in sorted(arms.items()) if n.startswith(base + '-seed')]


def mean_sd(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def save(fig, path):
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=110, bbox_inches='tight'))
    plt.close(fig)


def interp_fixed(fixed, steps, key='test_accuracy'):
    """Fixed-T accuracy at ``steps`` average steps, linear between integer T."""
    ts = sorted(fixed)
    return float(np.interp(steps, ts, [fixed[t][key] for t in ts]))


def plot_pareto(arms, fixed, t_max, path):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, label in ((axes[0], 'avg_steps', 'average time steps (mean over gated layers)'),
                           (axes[1], 'avg_steps_weighted', 'average time steps weighted by synaptic operations')):
        ts = sorted(fixed)
        ax.plot(ts, [100 * fixed[t]['test_accuracy'] for t in ts], 'o-', color='k', label='fixed T (seed 0)')
        for t in ts:
            ax.annotate(f'T={t}', (t, 100 * fixed[t]['test_accuracy']), textcoords='offset points',
                        xytext=(4, -10), fontsize=7)
        ref = seeds_of(arms, f'fixed-t{t_max}')
        if len(ref) > 1:
            m, sd = mean_sd([100 * r['test_accuracy'] for r in ref])
            ax.errorbar([t_max + 0.05], [m], yerr=[sd], fmt='s', color='gray', capsize=3,
                        label=f'fixed T={t_max}, {len(ref)} seeds')
        dtss = {n: a for n, a in arms.items() if n.startswith('dtss-') and '-seed' not in n}
        for i, (n, a) in enumerate(sorted(dtss.items())):
            ax.plot(a[key], 100 * a['test_accuracy'], 'D', color=f'C{i}', label=n)
            rep = seeds_of(arms, n)
            if len(rep) > 1:
                xs = [r[key] for r in rep]
                m, sd = mean_sd([100 * r['test_accuracy'] for r in rep])
                ax.errorbar([statistics.mean(xs)], [m], yerr=[sd], fmt='D', mfc='none', color=f'C{i}',
                            capsize=3, label=f'{n}, {len(rep)} seeds')
        ann = arms.get('ann')
        if ann:
            ax.axhline(100 * ann['test_accuracy'], ls=':', color='C7', label='ANN twin')
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel('test accuracy, float model (%)')
    axes[1].legend(fontsize=7, loc='lower right')
    fig.suptitle('DTSS against fixed T (higher and further left is better)')
    save(fig, path)


def plot_steps(arms, path):
    dtss = {n: a for n, a in sorted(arms.items()) if n.startswith('dtss-') and '-seed' not in n}
    if not dtss:
        return False
    layers = list(next(iter(dtss.values()))['active_steps'])
    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.8 / len(dtss)
    for i, (n, a) in enumerate(dtss.items()):
        ax.bar(np.arange(len(layers)) + i * width, [a['active_steps'][layer] for layer in layers], width, label=n)
    ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2)
    ax.set_xticklabels(layers, rotation=30, ha='right', fontsize=8)
    ax.set_ylabel('active time steps')
    ax.legend(fontsize=7)
    ax.set_title('Where DTSS spends its time steps, per layer')
    save(fig, path)
    return True


def plot_sensitivity(sens, prefix):
    t_max, bins = sens['t_max'], np.asarray(sens['bins'])
    centers = (bins[:-1] + bins[1:]) / 2
    cats = [c for c in CATEGORIES if any(e['category'] == c for e in sens['layers'].values())]
    fig, axes = plt.subplots(len(cats), t_max, figsize=(2.6 * t_max, 2.0 * len(cats)), sharex=True)
    axes = np.atleast_2d(axes)
    for r, c in enumerate(cats):
        members = [e for e in sens['layers'].values() if e['category'] == c]
        ann = np.sum([e['ann_hist'] for e in members], axis=0).astype(float)
        for t in range(1, t_max + 1):
            ax = axes[r, t - 1]
            snn = np.sum([e['snn_hist'][str(t)] for e in members], axis=0).astype(float)
            ax.bar(centers, snn / snn.sum(), width=bins[1] - bins[0], color='C0', alpha=0.7, label='SNN rate')
            ax.step(centers, ann / ann.sum(), where='mid', color='C3', label='ANN twin')
            ax.set_yscale('log')
            ax.set_ylim(1e-4, 1)
            w1 = sens['categories'][c]['w1_ann'][str(t)]
            ax.set_title(f'{c}, first {t} step{"s" if t > 1 else ""}: W1 {w1:.3f}', fontsize=8)
            if t == 1:
                ax.set_ylabel('fraction', fontsize=8)
            if r == len(cats) - 1:
                ax.set_xlabel('activation / spike rate', fontsize=8)
    axes[0, -1].legend(fontsize=7)
    fig.suptitle('ANN twin activations vs SNN spike rates over the first T steps, per category')
    fig.tight_layout()
    save(fig, prefix + '_hist.png')

    ts = list(range(1, t_max + 1))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for c in cats:
        d = sens['categories'][c]
        axes[0].plot(ts, [d['w1_ann'][str(t)] for t in ts], 'o-', label=c)
        axes[1].plot(ts, [d['w1_tmax'][str(t)] for t in ts], 'o-', label=c)
        cut = sens['category_cut'][c]
        axes[2].plot(ts, [100 * cut[str(t)]['val_accuracy'] for t in ts], 'o-', label=c)
    axes[0].set_title('W1(ANN twin, SNN rate over first T steps)', fontsize=9)
    axes[1].set_title(f'W1(SNN rate over T_max={t_max}, over first T)', fontsize=9)
    axes[2].set_title('validation accuracy, one category cut to T steps', fontsize=9)
    axes[2].axhline(100 * sens['uncut']['val_accuracy'], ls=':', color='k', label='uncut')
    for ax in axes:
        ax.set_xlabel('T')
        ax.set_xticks(ts)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[2].set_ylabel('%')
    fig.tight_layout()
    save(fig, prefix + '_curves.png')


def energy_rows(arms, names, em):
    """{arm: energy dict} for SNN arms with counted operations, and the ANN twin."""
    out = {}
    for n in names:
        a = arms.get(n)
        if a is None:
            continue
        if a.get('ann') and 'neurons' in a:
            out[n] = ann_energy(a['flops_per_step'], a['neurons'], em)
        elif 'synops_per_sample' in a:
            first = next(iter(a['active_steps']))
            out[n] = snn_energy(a['synops_per_sample'], a['neuron_updates_per_sample'], first, em)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--results', default=os.path.join(ROOT, 'results', 'fashion-mnist'))
    p.add_argument('--doc', default=os.path.join(ROOT, 'docs', 'results.md'))
    p.add_argument('--figures', default=None, help='PNG folder (default: figures/ beside --doc)')
    args = p.parse_args(argv)
    fig_dir = args.figures or os.path.join(os.path.dirname(os.path.abspath(args.doc)), 'figures')
    os.makedirs(fig_dir, exist_ok=True)
    rel = os.path.relpath(fig_dir, os.path.dirname(os.path.abspath(args.doc)))
    arms = load_arms(args.results)
    fixed = {a['t_max']: a for n, a in arms.items() if n.startswith('fixed-t') and '-seed' not in n}
    if not fixed:
        raise ReportError(f'{args.results} has no fixed-T arm yet')
    t_max = max(fixed)
    headline = read_json(os.path.join(args.results, 'headline.json')) or {}
    sens = read_json(os.path.join(args.results, 'sensitivity.json'))
    results_rel = os.path.relpath(args.results, ROOT)
    L = ['# Results: DTSS against fixed T on ' + next(iter(arms.values()))['dataset'], '',
         f'Generated by `python scripts/report.py --results {results_rel}` from the JSON files under '
         f'`{results_rel}/` (written by `python scripts/study.py`, `scripts/analyze.py` and '
         '`scripts/run_lava.py --json`). Nothing here is typed by hand.', '']

    # ---- protocol
    pre = arms.get('pretrain')
    ft = next((a for n, a in arms.items() if n.startswith('fixed-t')), None)
    if pre and ft:
        L += ['## Protocol', '',
              f'- Data: {pre["dataset"]}; {pre.get("val_size")} training images held out for validation '
              '(model selection), the test split only reported.',
              f'- Common start: fixed T = {t_max}, {pre["epochs"]} epochs from scratch '
              f'(`{pre["command"]}`), validation {pct(pre.get("val_accuracy"))}%, test '
              f'{pct(pre["test_accuracy"])}%.',
              f'- Every arm: fine-tuned from that start on {ft.get("train_images")} training images '
              f'({ft["epochs"]} epoch(s)), same learning rate and schedule; DTSS gates start at T_max and '
              'train with the mask loss for the first half, then freeze. BatchNorm statistics are '
              're-estimated on 4,096 training images before evaluation and export.',
              '- Accuracy: "float" is the trained model, "fixed point" the exported NetX model (8-bit weights, '
              'integer neurons), what Lava and Loihi run; "gap" = fixed point - float.', '']

    # ---- sweep table
    L += ['## Every arm', '',
          '| arm | mask-loss categories | lambda_m | val % | test % (float) | test % (fixed point) | gap pp '
          '| avg steps | weighted avg steps | train time s |',
          '|---|---|---|---|---|---|---|---|---|---|']
    order = sorted(arms, key=lambda n: (not n.startswith('fixed'), not n.startswith('dtss'), n))
    for n in order:
        a = arms[n]
        q = a.get('quantized_test_accuracy')
        gap = '' if q is None else f'{100 * (q - a["test_accuracy"]):+.2f}'
        cats = ','.join(f'{c}={w:g}' if w != 1 else c for c, w in (a.get('mask_weights') or {}).items()) \
            if a.get('dtss') else '-'
        lam = f'{a["lambda_m"]:g}' if a.get('dtss') else '-'
        L.append(f'| {n} | {cats} | {lam} | {pct(a.get("val_accuracy"))} | {pct(a["test_accuracy"])} | {pct(q)} '
                 f'| {gap} | {a["avg_steps"]:.2f} | {a.get("avg_steps_weighted", 0):.2f} | {a.get("wall_s", "")} |')
    L.append('')

    # ---- headline
    ref = seeds_of(arms, f'fixed-t{t_max}')
    ref_m, ref_sd = mean_sd([r['test_accuracy'] for r in ref])
    best = headline.get('headline_arm')
    if best in arms:
        rep = seeds_of(arms, best)
        acc_m, acc_sd = mean_sd([r['test_accuracy'] for r in rep])
        steps_m = statistics.mean(r['avg_steps'] for r in rep)
        wsteps_m = statistics.mean(r['avg_steps_weighted'] for r in rep)
        q_ref = mean_sd([r['quantized_test_accuracy'] for r in ref if r.get('quantized_test_accuracy') is not None]
                        or [0.0])[0]
        q_m = mean_sd([r['quantized_test_accuracy'] for r in rep if r.get('quantized_test_accuracy') is not None]
                      or [0.0])[0]
        within = [t for t in sorted(fixed) if fixed[t]['test_accuracy'] >= ref_m - ISO_PP / 100]
        iso_dtss = [n for n, a in arms.items() if n.startswith('dtss-') and '-seed' not in n
                    and a['test_accuracy'] >= ref_m - ISO_PP / 100]
        fewest_dtss = min(iso_dtss, key=lambda n: arms[n]['avg_steps']) if iso_dtss else None
        curve = interp_fixed(fixed, steps_m)
        L += ['## Headline', '',
              f'Headline DTSS arm, chosen on validation by `scripts/study.py` ({headline.get("rule", "")}): '
              f'**{best}**.', '',
              f'- Fixed T = {t_max}, {len(ref)} seeds: test accuracy {100 * ref_m:.2f} ± {100 * ref_sd:.2f}% '
              f'(float), {100 * q_ref:.2f}% fixed point, at {t_max} steps.',
              f'- {best}, {len(rep)} seeds: test accuracy {100 * acc_m:.2f} ± {100 * acc_sd:.2f}% (float), '
              f'{100 * q_m:.2f}% fixed point, at {steps_m:.2f} average steps ({wsteps_m:.2f} weighted by '
              f'synaptic operations): {100 * (1 - steps_m / t_max):.1f}% fewer steps than fixed T = {t_max} '
              f'({100 * (1 - wsteps_m / t_max):.1f}% weighted), {100 * (acc_m - ref_m):+.2f} pp accuracy.',
              f'- (a) Fewest average steps within {ISO_PP} pp of fixed T = {t_max} on test (seed 0 arms): DTSS '
              + (f'{arms[fewest_dtss]["avg_steps"]:.2f} ({fewest_dtss})' if fewest_dtss else 'none')
              + f'; fixed T: {within[0] if within else "none"}.',
              f'- (b) At {steps_m:.2f} average steps the fixed-T curve (linear between integer T, seed 0) gives '
              f'{100 * curve:.2f}%; the headline DTSS arm {100 * acc_m:.2f}% ({100 * (acc_m - curve):+.2f} pp).',
              '']
    L += [f'![Pareto]({rel}/pareto.png)', '',
          'Command: `python scripts/report.py` (data: `python scripts/study.py`).', '']
    plot_pareto(arms, fixed, t_max, os.path.join(fig_dir, 'pareto.png'))
    if plot_steps(arms, os.path.join(fig_dir, 'active_steps.png')):
        L += ['## Per-layer active steps of each DTSS arm', '', f'![active steps]({rel}/active_steps.png)', '']
        dtss = [n for n in order if n.startswith('dtss-') and '-seed' not in n]
        layers = list(arms[dtss[0]]['active_steps'])
        L += ['| layer | ' + ' | '.join(dtss) + ' |', '|---|' + '---|' * len(dtss)]
        for layer in layers:
            L.append(f'| {layer} | ' + ' | '.join(str(arms[n]['active_steps'][layer]) for n in dtss) + ' |')
        L.append('')

    # ---- sensitivity
    if sens:
        plot_sensitivity(sens, os.path.join(fig_dir, 'sensitivity'))
        t = sens['t_max']
        L += ['## Sensitivity of each module category to fewer time steps', '',
              f'`{sens["command"]}` on {sens["images"]} validation images; distance: {sens["distance"]} '
              '(why: scripts/analyze.py docstring). Accuracy: validation split, one category cut, the rest at '
              f'T_max = {t}, no retraining.', '',
              f'![histograms]({rel}/sensitivity_hist.png)', '', f'![curves]({rel}/sensitivity_curves.png)', '',
              '| category | ' + ' | '.join(f'W1 to ANN, T={s}' for s in range(1, t + 1)) + ' | '
              + ' | '.join(f'val % cut to T={s}' for s in range(1, t + 1)) + ' |',
              '|---|' + '---|' * (2 * t)]
        for c, d in sens['categories'].items():
            if c not in sens['category_cut']:
                continue
            cut = sens['category_cut'][c]
            L.append(f'| {c} | ' + ' | '.join(f'{d["w1_ann"][str(s)]:.3f}' for s in range(1, t + 1)) + ' | '
                     + ' | '.join(pct(cut[str(s)]['val_accuracy']) for s in range(1, t + 1)) + ' |')
        L += ['', f'Suggested mask-loss categories (rule in `scripts/study.py`): '
              f'`{headline.get("suggested_categories", "")}`.', '']

    # ---- energy
    em = EnergyModel()
    names = [best, f'fixed-t{t_max}', 'ann'] if best else [f'fixed-t{t_max}', 'ann']
    energy = energy_rows(arms, [n for n in names if n], em)
    if len(energy) >= 2:
        cols = list(energy)
        L += ['## Energy per image (45 nm model, `lava_dtss/energy.py`, docs/energy.md)', '',
              'SNN counts: synaptic operations and neuron updates of the exported fixed-point model on the whole '
              'test split, counted exactly as the gated Lava run counts them; ANN twin: dense MACs. '
              f'Figures: {em.to_dict()}.', '',
              '| layer | ' + ' | '.join(f'{c} compute nJ | {c} memory nJ' for c in cols) + ' |',
              '|---|' + '---|---|' * len(cols)]
        layers = list(energy[cols[0]]['layers'])
        for layer in layers + ['total']:
            row = []
            for c in cols:
                e = energy[c]['total'] if layer == 'total' else energy[c]['layers'].get(layer)
                row += [f'{e["compute_pj"] / 1e3:.1f}', f'{e["memory_pj"] / 1e3:.1f}'] if e else ['', '']
            L.append(f'| {"**total**" if layer == "total" else layer} | ' + ' | '.join(row) + ' |')
        L.append('')
        base = energy[cols[0]]['total']
        for c in cols[1:]:
            o = energy[c]['total']
            L.append(f'- {c} / {cols[0]}: compute x{o["compute_pj"] / base["compute_pj"]:.2f}, memory '
                     f'x{o["memory_pj"] / base["memory_pj"]:.2f}, total x{o["total_pj"] / base["total_pj"]:.2f}')
        L.append('')

    # ---- Lava
    lava = {os.path.basename(pth)[5:-5]: read_json(pth)
            for pth in sorted(glob.glob(os.path.join(args.results, 'lava-*.json')))}
    if lava:
        L += ['## The shipped models in Lava (gated), on the test split', '',
              '| model | samples | Lava accuracy % | predictions agree % | spikes of every layer identical '
              '| synaptic ops gated / ungated | neuron updates gated / ungated | command |',
              '|---|---|---|---|---|---|---|---|']
        for n, r in lava.items():
            ag = r.get('agreement', {})
            so = (f'{r["synops_gated"]:,} / {r["synops_ungated"]:,}' if 'synops_gated' in r and 'synops_ungated' in r
                  else f'{r.get("synops_gated", r.get("synops_ungated", 0)):,}')
            nu = (f'{r["neuron_updates_gated"]:,} / {r["neuron_updates_ungated"]:,}'
                  if 'neuron_updates_gated' in r and 'neuron_updates_ungated' in r
                  else f'{r.get("neuron_updates_gated", r.get("neuron_updates_ungated", 0)):,}')
            L.append(f'| {n} | {r["num_samples"]} | {pct(r["accuracy"])} | {pct(ag.get("predictions"))} '
                     f'| {ag.get("spikes_equal_all_layers")} | {so} | {nu} | `{r.get("command", "")}` |')
        L.append('')

    text = '\n'.join(L) + '\n'
    atomic_write(args.doc, lambda f: f.write(text), mode='w')
    print(f'wrote {args.doc} and figures in {fig_dir}')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except ReportError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
