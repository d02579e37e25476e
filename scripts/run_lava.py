#!/usr/bin/env python
"""Run a NetX HDF5 network on Lava (CPU simulator, Loihi 2 fixed point) with
per-layer time-step gating, and check it against training-side inference.

    python scripts/run_lava.py                       # shipped digits model, 100 samples
    python scripts/run_lava.py --num-samples 360 --json report.json
    python scripts/run_lava.py --num-samples 360 --batch 100   # 100 samples per Lava step
    python scripts/run_lava.py --check-loihi         # static Loihi 2 fit report

Reports accuracy, agreement with the training-side fixed-point model (every
layer's spikes at every step, logits, predictions), per-layer active steps,
synaptic operations and neuron updates executed with gating and without, and
wall time.
"""
import argparse
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, ROOT)
DEFAULT_MODEL = os.path.join(ROOT, 'netx_models', 'digits_tiny_dtss.net')


def parse_args(argv=None):
    from lava_dtss.data import DATASETS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default=DEFAULT_MODEL, help='NetX HDF5 file (default: the shipped digits model)')
    p.add_argument('--dataset', default=None, choices=sorted(DATASETS),
                   help="test data (default: the file's dataset, else digits)")
    p.add_argument('--data-dir', default=None, help='dataset folder (see train_slayer.py)')
    p.add_argument('--num-samples', type=int, default=100, help='test samples to run (default 100)')
    p.add_argument('--batch', type=int, default=1, metavar='B',
                   help='samples side by side in every Lava process at each time step (default 1; '
                        'same spikes, logits and operation counts; larger B pays Lava\'s per-step '
                        'cost once for B samples, memory grows with B; ~100 is a good value)')
    p.add_argument('--t-max', type=int, default=None,
                   help='time steps per sample for stock NetX files (ours store T_max)')
    p.add_argument('--no-gating', action='store_true',
                   help='run every layer for all T_max steps (outputs still masked) only')
    p.add_argument('--gated-only', action='store_true',
                   help='run only the gated network (default: gated, then ungated for comparison)')
    p.add_argument('--json', default=None, metavar='PATH', help='write the report as JSON')
    p.add_argument('--backend', default='cpu', choices=('cpu', 'loihi2'),
                   help='cpu: Lava CPU simulator; loihi2: Loihi 2 through lava-loihi (INRC)')
    p.add_argument('--check-loihi', action='store_true',
                   help='static check against Loihi 2 limits; exit 1 on a violation (with --build loihi: '
                        'also the resource report of the standard-process build)')
    p.add_argument('--max-memory-gb', type=float, default=None, metavar='GB',
                   help='refuse a run whose estimated memory (weights, neuron states, records, frames, '
                        'channel buffers) exceeds GB gibibytes, before anything is built (default: half '
                        'of this machine\'s RAM)')
    p.add_argument('--build', default='fused', choices=('fused', 'loihi'),
                   help='fused: our fused processes (default, fast simulation); loihi: Lava standard '
                        'processes (Conv, Dense, DelayDense, LIFReset) that Loihi 2 maps to neuro-cores, '
                        'one sample per window (docs/loihi.md)')
    p.add_argument('--timing', default='auto', choices=('auto', 'sync', 'stock'),
                   help='stock: stock NetX\'s pipeline (one step of synaptic latency per layer, '
                        'one sample stream, --batch 1); sync: layer-synchronous; auto (default): '
                        'stock for files without meta/format, sync for ours')
    p.add_argument('--reset-interval', type=int, default=0, metavar='R',
                   help='stock timing: reset every layer every R steps at NetX\'s per-layer offsets, '
                        'as netx.hdf5.Network(reset_interval=R) (default 0: never, NetX\'s default)')
    p.add_argument('--skip-input-neuron', action='store_true',
                   help='feed the data straight to layer 1 of a file whose input layer has a neuron, '
                        'as stock netx.hdf5.Network(skip_layers=1)')
    args = p.parse_args(argv)
    from lava_dtss.netx_file import MAX_T
    if args.reset_interval < 0:
        raise ValueError(f'--reset-interval must be >= 0 steps (0: never), got {args.reset_interval}')
    if args.batch < 1:
        raise ValueError(f'--batch must be at least 1 sample per Lava step, got {args.batch}')
    if args.build == 'loihi' and args.batch != 1:
        raise ValueError(f'--build loihi runs one sample per window (standard processes have no sample '
                         f'axis): --batch must be 1, got {args.batch}')
    if args.build == 'loihi' and args.no_gating:
        raise ValueError('--build loihi always gates (the gate is part of the network on the chip); '
                         'drop --no-gating')
    if args.t_max is not None and not 1 <= args.t_max <= MAX_T:
        raise ValueError(f'--t-max must be in 1..{MAX_T} time steps, got {args.t_max}')
    if args.max_memory_gb is not None and not 0 < args.max_memory_gb < 1 << 20:
        raise ValueError(f'--max-memory-gb must be a positive number of GiB, got {args.max_memory_gb}')
    if args.json:
        problem = _unwritable(args.json)
        if problem:
            raise ValueError(f'--json {args.json}: {problem}')
    return args


def _unwritable(path):
    """Why ``path`` cannot receive the report (checked before the run), or None."""
    if os.path.isdir(path):
        return 'is a folder; expected a file name'
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f'folder {folder} does not exist'
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return 'is not writable'
    return None


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import torch
    from lava_dtss import data, lava_runtime
    from lava_dtss.netx_file import read_netx
    from lava_dtss.training import write_json

    spec = read_netx(args.model, skip_input_neuron=args.skip_input_neuron)
    if args.check_loihi:
        from lava_dtss.loihi import check_network, format_report
        checks = check_network(spec)
        print(format_report(checks))
        if args.build == 'loihi':
            from lava_dtss import loihi_build
            t_max = spec.t_max or args.t_max
            if t_max is None:
                raise ValueError(f'{args.model} does not store T_max (a stock NetX file): pass --t-max')
            print('\n' + loihi_build.format_resources(loihi_plan(args, spec, t_max)))
        bad = [c for c in checks if c.violations]
        for c in bad:
            print(f'error: layer {c.name}: {"; ".join(c.violations)}', file=sys.stderr)
        return 1 if bad else 0

    dataset = args.dataset or spec.meta.get('dataset') or 'digits'
    t_max = spec.t_max or args.t_max
    if t_max is None:
        raise ValueError(f'{args.model} does not store T_max (a stock NetX file): pass --t-max')
    if spec.t_max and args.t_max and args.t_max != spec.t_max:
        raise ValueError(f'--t-max {args.t_max} differs from the file\'s T_max {spec.t_max}')
    if args.build == 'loihi':
        from lava_dtss import loihi_build
        from lava.utils import loihi
        plan = loihi_plan(args, spec, t_max)     # what cannot be mapped fails here, before any data
        if args.backend == 'loihi2' and not loihi.is_installed():
            print(loihi_build.dry_run(plan, args.num_samples, 'loihi2'))
            print(loihi_build.format_resources(plan))
            raise lava_runtime.BackendUnavailable(lava_runtime.INRC_MESSAGE)
    # refuse sizes beyond the memory limit before loading data or building any Lava process
    limit = None if args.max_memory_gb is None else int(args.max_memory_gb * 2**30)
    lava_runtime.check_memory(spec, max(1, args.num_samples), t_max, min(args.batch, max(1, args.num_samples)),
                              limit=limit, source=args.model, reference='config' in spec.meta)
    test = data.load_dataset(dataset, 'test', args.data_dir)
    if not 1 <= args.num_samples <= len(test):
        raise ValueError(f'--num-samples must be in 1..{len(test)} for the {dataset} test set, '
                         f'got {args.num_samples}')
    xs, ys = zip(*(test[i] for i in range(args.num_samples)))
    images, labels = torch.stack(xs), np.asarray(ys)
    in_shape = tuple(spec.layers[0].shape)
    if tuple(images.shape[1:]) != in_shape:
        raise ValueError(f'{dataset} images have shape {tuple(images.shape[1:])} but the network '
                         f'{args.model} expects input {in_shape}')

    from lava_dtss.reference import direct_images
    frames = direct_images(images, spec.layers[0].params.get('inputScale', 1))   # [S, C, H, W]
    if args.build == 'loihi':
        return run_loihi_build(args, spec, images, labels, frames, dataset, t_max)
    batch = min(args.batch, args.num_samples)
    if args.no_gating and args.gated_only:
        raise ValueError('--no-gating and --gated-only exclude each other')
    gated_modes = [False] if args.no_gating else [True] if args.gated_only else [True, False]
    results = {}
    for gating in gated_modes:
        label = 'gated' if gating else 'ungated'
        print(f'running {args.num_samples} samples x {t_max} steps on Lava ({args.backend}, {label}, '
              f'batch {batch}) ...', flush=True)
        results[label] = lava_runtime.run(spec, frames, gating=gating, backend=args.backend,
                                          batch=batch, t_max=t_max, max_memory=limit,
                                          timing=args.timing, reset_interval=args.reset_interval)
    main_res = results['gated' if not args.no_gating else 'ungated']
    pred = main_res.predictions
    report = {'model': args.model, 'dataset': dataset, 'num_samples': args.num_samples, 't_max': t_max,
              'backend': args.backend, 'accuracy': float((pred == labels).mean()),
              'processes': main_res.processes, 'batch': batch, 'lava_steps': main_res.num_steps,
              'memory_mb': {k: round(v / 2**20, 1) for k, v in main_res.memory.items()},
              'command': ' '.join(['python'] + sys.argv), 'imported_from_nir': 'nir' in spec.meta}

    # agreement with training-side fixed-point inference (our files only)
    if 'config' in spec.meta:
        from lava_dtss.reference import reference_run
        ref_logits, ref_fps = reference_run(spec, images)
        layer_ok = {n: bool(np.array_equal(ref_fps[n], r.fingerprints[n]))
                    for r in results.values() for n in ref_fps}
        report['agreement'] = {
            'predictions': float((ref_logits.argmax(1) == pred).mean()),
            'logits_equal': all(bool(np.array_equal(ref_logits, r.logits)) for r in results.values()),
            'spikes_equal_all_layers': all(layer_ok.values()),
            'layers_differing': [n for n, ok in layer_ok.items() if not ok],
            'reference_accuracy': float((ref_logits.argmax(1) == labels).mean()),
        }
    else:
        report['agreement'] = None
    if len(results) == 2:
        g, u = results['gated'], results['ungated']
        report['gating_changes_output'] = not all(
            np.array_equal(g.fingerprints[n], u.fingerprints[n]) for n in g.fingerprints)
    layers = {}
    for layer in spec.layers:
        if layer.name not in main_res.synops:
            continue
        entry = {'type': layer.type, 'category': layer.category,
                 'active_steps': layer.active_steps or t_max,
                 'spikes': int(main_res.fingerprints[layer.name][:, 0].sum()),
                 'analog_input': main_res.input_analog[layer.name]}
        for label, r in results.items():
            entry[f'synops_{label}'] = r.synops[layer.name]
            entry[f'neuron_updates_{label}'] = r.neuron_updates[layer.name]
        layers[layer.name] = entry
    report['layers'] = layers
    for label, r in results.items():
        report[f'synops_{label}'] = sum(r.synops.values())
        report[f'neuron_updates_{label}'] = sum(r.neuron_updates.values())
        report[f'wall_s_{label}'] = round(r.wall_s, 3)
        report[f'startup_s_{label}'] = round(r.startup_s, 3)
        report[f'samples_per_s_{label}'] = round(args.num_samples / r.wall_s, 2)
    print_report(report, list(results))
    if args.json:
        write_json(args.json, report)
        print(f'wrote {args.json}')
    agree = report['agreement']
    if agree is not None and not (agree['spikes_equal_all_layers'] and agree['logits_equal']):
        print('error: Lava differs from training-side inference in layers '
              f'{agree["layers_differing"]}', file=sys.stderr)
        return 2
    return 0


def loihi_plan(args, spec, t_max):
    """The ``--build loihi`` plan; what it cannot map is one error naming the file."""
    from lava_dtss import loihi_build
    try:
        return loihi_build.plan(spec, t_max)
    except ValueError as e:
        raise ValueError(f'{args.model}: {e}') from None


def run_loihi_build(args, spec, images, labels, frames, dataset, t_max):
    """``--build loihi``: run the standard-process build, compare it with
    training-side inference (our files), report offsets and resources."""
    import numpy as np
    from lava_dtss import loihi_build
    from lava_dtss.training import write_json
    print(f'running {args.num_samples} samples on Lava ({args.backend}, standard-process build, '
          f'one sample per window) ...', flush=True)
    res = loihi_build.run(spec, frames, t_max=t_max, backend=args.backend)
    pred = res.predictions
    report = {'model': args.model, 'dataset': dataset, 'num_samples': args.num_samples, 't_max': t_max,
              'backend': args.backend, 'build': 'loihi', 'accuracy': float((pred == labels).mean()),
              'processes': res.processes, 'period': res.period, 'lava_steps': res.num_steps,
              'offsets': res.offsets, 'wall_s': round(res.wall_s, 3), 'startup_s': round(res.startup_s, 3),
              'command': ' '.join(['python'] + sys.argv)}
    if 'config' in spec.meta:
        from lava_dtss.reference import reference_run
        ref_logits, ref_fps = reference_run(spec, images)
        differing = [n for n in ref_fps if not np.array_equal(ref_fps[n], res.fingerprints[n])]
        report['agreement'] = {'predictions': float((ref_logits.argmax(1) == pred).mean()),
                               'logits_equal': bool(np.array_equal(ref_logits, res.logits)),
                               'spikes_equal_all_layers': not differing, 'layers_differing': differing}
    else:
        report['agreement'] = None
    print(f'\nmodel {args.model}  ({res.processes} Lava processes, standard-process build)')
    print(f'accuracy on {args.num_samples} {dataset} test samples: {report["accuracy"]:.4f}')
    a = report['agreement']
    if a is not None:
        print(agreement_line(a, ' (after each layer\'s offset)'))
    print(f'window P = {res.period} Lava steps, {res.num_steps} steps; offsets: '
          + ', '.join(f'{n} {o}' for n, o in res.offsets.items() if n != 'input'))
    print(loihi_build.format_resources(loihi_build.plan(spec, t_max), res.spikes_per_step))
    print(f'wall time: {res.wall_s:.2f} s (start-up {res.startup_s:.2f} s)')
    if args.json:
        write_json(args.json, report)
        print(f'wrote {args.json}')
    if a is not None and not (a['spikes_equal_all_layers'] and a['logits_equal']):
        print(f'error: Lava differs from training-side inference in layers {a["layers_differing"]}',
              file=sys.stderr)
        return 2
    return 0


def agreement_line(a, qualifier=''):
    """One line on the agreement report ``a`` (predictions, logits, every layer's spikes)."""
    spikes = 'identical' if a['spikes_equal_all_layers'] else 'DIFFERENT: ' + ', '.join(a['layers_differing'])
    return (f'agreement with training-side fixed-point inference{qualifier}: predictions '
            f'{a["predictions"] * 100:.1f}%, logits {"identical" if a["logits_equal"] else "DIFFERENT"}, '
            f'spikes of every layer at every step {spikes}')


def print_report(r, labels):
    print(f'\nmodel {r["model"]}  ({r["processes"]} Lava processes)')
    print(f'accuracy on {r["num_samples"]} {r["dataset"]} test samples: {r["accuracy"]:.4f}')
    a = r['agreement']
    if a is not None:
        print(agreement_line(a))
    elif r.get('imported_from_nir'):
        print('agreement: n/a (imported from NIR: no training-side model here; docs/nir.md compares '
              'it with its source framework)')
    else:
        print('agreement: n/a (stock NetX file: no training-side model)')
    head = f'{"layer":22s} {"steps":>5s} {"spikes":>8s}'
    for lab in labels:
        head += f' {"synops " + lab:>16s} {"updates " + lab:>17s}'
    print('\n' + head)
    for name, e in r['layers'].items():
        line = f'{name:22s} {e["active_steps"]:5d} {e["spikes"]:8d}'
        for lab in labels:
            line += f' {e["synops_" + lab]:16d} {e["neuron_updates_" + lab]:17d}'
        print(line)
    line = f'{"total":22s} {"":5s} {"":8s}'
    for lab in labels:
        line += f' {r["synops_" + lab]:16d} {r["neuron_updates_" + lab]:17d}'
    print(line)
    if 'gated' in labels and 'ungated' in labels:
        print(f'gating: synaptic operations x{r["synops_gated"] / max(1, r["synops_ungated"]):.3f}, '
              f'neuron updates x{r["neuron_updates_gated"] / max(1, r["neuron_updates_ungated"]):.3f} '
              f'of ungated; output spikes {"changed (BUG)" if r["gating_changes_output"] else "unchanged"}')
    for lab in labels:
        print(f'wall time {lab}: {r["wall_s_" + lab]:.2f} s ({r["samples_per_s_" + lab]:.1f} samples/s; '
              f'start-up {r["startup_s_" + lab]:.2f} s)')
    m = r['memory_mb']
    print(f'batch {r["batch"]} ({r["lava_steps"]} Lava steps); estimated memory {m["total"]:.1f} MB '
          f'(frames {m["frames"]:.1f}, weights {m["weights"]:.1f}, states {m["states"]:.1f}, channels {m["channels"]:.1f}, '
          f'records {m["records"]:.1f}, workspace {m["workspace"]:.1f}; interpreters not included)')


if __name__ == '__main__':
    try:
        code = main()
    except KeyboardInterrupt:
        print('interrupted; Lava stopped', file=sys.stderr)
        code = 130
    except Exception as e:  # one clear line for bad input
        from lava_dtss.netx_file import NetXFormatError
        from lava_dtss.data import DatasetError
        from lava_dtss.lava_runtime import BackendUnavailable, LavaRunError
        if isinstance(e, (NetXFormatError, DatasetError, BackendUnavailable, LavaRunError, ValueError)):
            print(f'error: {e}', file=sys.stderr)
            code = 3 if isinstance(e, BackendUnavailable) else 4 if isinstance(e, LavaRunError) else 2
        else:
            raise
    sys.exit(code)
