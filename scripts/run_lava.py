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
    from lava_dtss.training.data import DATASETS
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
    p.add_argument('--exit-policy', default=None, choices=('never', 'margin', 'confidence'),
                   help='per-sample early exit with continuous batching (fused build, our files): after '
                        'every step the readout ends a sample when the two largest accumulated integer '
                        'logit sums z = sum_t (T_max W x_t + b) differ by --exit-threshold or more '
                        '(margin), or at T_max (never); the row then takes the next sample at the next '
                        'step. confidence needs a softmax and is refused in Lava (training side only: '
                        'scripts/early_exit.py)')
    p.add_argument('--exit-threshold', type=float, default=None, metavar='N',
                   help='margin threshold: an integer >= 0 in units of z (T_max times the file\'s '
                        'logits at the full window); scripts/early_exit.py chooses one on validation')
    args = p.parse_args(argv)
    from lava_dtss.deploy.netx_file import MAX_T
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
    if args.exit_policy is not None:
        from lava_dtss.deploy.early_exit import check_policy
        t = args.exit_threshold
        args.exit_threshold = check_policy(args.exit_policy, int(t) if t is not None and t == int(t) else t)
        if args.build == 'loihi':
            raise ValueError('--exit-policy runs on the fused build only: --build loihi has no early exit '
                             '(docs/loihi.md says what a chip needs for it)')
    elif args.exit_threshold is not None:
        raise ValueError('--exit-threshold needs --exit-policy')
    if args.no_gating and args.gated_only:
        raise ValueError('--no-gating and --gated-only exclude each other')
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
    import tempfile
    try:      # what the report's atomic write does: a temporary file beside it (fails under /proc)
        with tempfile.NamedTemporaryFile(dir=folder, prefix='.' + os.path.basename(path) + '.'):
            pass
    except OSError as e:
        return f'cannot be written in {folder} ({e.strerror or e})'
    return None


def main(argv=None):
    args = parse_args(argv)
    from lava_dtss.deploy import lava_runtime, loihi_build
    from lava_dtss.deploy.loihi_check import check_file
    from lava_dtss.training.checkpoints import write_json

    if args.check_loihi:
        bad = check_file(args.model, build=args.build, t_max=args.t_max,
                         skip_input_neuron=args.skip_input_neuron)
        for c in bad:
            print(f'error: layer {c.name}: {"; ".join(c.violations)}', file=sys.stderr)
        return 1 if bad else 0
    report, results = lava_runtime.run_file(
        args.model, num_samples=args.num_samples, dataset=args.dataset, data_dir=args.data_dir,
        batch=args.batch, t_max=args.t_max, gating=False if args.no_gating else True if args.gated_only else None,
        backend=args.backend, max_memory=None if args.max_memory_gb is None else int(args.max_memory_gb * 2**30),
        timing=args.timing, reset_interval=args.reset_interval, skip_input_neuron=args.skip_input_neuron,
        build=args.build, command=' '.join(['python'] + sys.argv),
        exit_policy=args.exit_policy, exit_threshold=args.exit_threshold)
    if args.exit_policy is not None:
        print_exit_report(report, list(results))
    elif args.build == 'loihi':
        res = results['loihi']
        print(f'\nmodel {args.model}  ({res.processes} Lava processes, standard-process build)')
        print(f'accuracy on {args.num_samples} {report["dataset"]} test samples: {report["accuracy"]:.4f}')
        if report['agreement'] is not None:
            print(agreement_line(report['agreement'], ' (after each layer\'s offset)'))
        print(f'window P = {res.period} Lava steps, {res.num_steps} steps; offsets: '
              + ', '.join(f'{n} {o}' for n, o in res.offsets.items() if n != 'input'))
        print(loihi_build.format_resources(loihi_build.plan(res.plan.spec, res.plan.t_max), res.spikes_per_step))
        print(f'wall time: {res.wall_s:.2f} s (start-up {res.startup_s:.2f} s)')
    else:
        print_report(report, list(results))
    if args.json:
        write_json(args.json, report)
        print(f'wrote {args.json}')
    agree = report['agreement']
    if agree is not None and not (agree['spikes_equal_all_layers'] and agree['logits_equal']
                                  and agree.get('exit_steps_equal', True)):
        print('error: Lava differs from training-side inference in layers '
              f'{agree["layers_differing"]}', file=sys.stderr)
        return 2
    return 0


def agreement_line(a, qualifier=''):
    """One line on the agreement report ``a`` (predictions, logits, every layer's spikes)."""
    spikes = 'identical' if a['spikes_equal_all_layers'] else 'DIFFERENT: ' + ', '.join(a['layers_differing'])
    return (f'agreement with training-side fixed-point inference{qualifier}: predictions '
            f'{a["predictions"] * 100:.1f}%, logits {"identical" if a["logits_equal"] else "DIFFERENT"}, '
            f'spikes of every layer at every step {spikes}')


def print_exit_report(r, labels):
    a = r['agreement']
    print(f'\nmodel {r["model"]}  ({r["processes"]} Lava processes), exit policy {r["exit_policy"]}'
          f'{"" if r["exit_threshold"] is None else " " + str(r["exit_threshold"])}, batch {r["batch"]}')
    print(f'accuracy on {r["num_samples"]} {r["dataset"]} test samples: {r["accuracy"]:.4f} '
          f'at {r["avg_exit_steps"]:.3f} average steps of {r["t_max"]}')
    print(agreement_line(a) + f', exit steps {"identical" if a["exit_steps_equal"] else "DIFFERENT"}')
    print(f'Lava steps: {r["lava_steps"]} (without exit: {r["lava_steps_without_exit"]}, '
          f'x{r["lava_steps"] / r["lava_steps_without_exit"]:.3f})')
    for lab in labels:
        print(f'{lab}: synaptic operations {r["synops_" + lab]}, neuron updates {r["neuron_updates_" + lab]}, '
              f'wall time {r["wall_s_" + lab]:.2f} s (start-up {r["startup_s_" + lab]:.2f} s)')


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
    import signal
    # SIGTERM (timeout, SLURM, systemd) stops the run like Ctrl-C (exit 143); while
    # importing (no Lava process yet) it exits at once, then the library's handlers take over
    signal.signal(signal.SIGTERM, lambda *_: (print('terminated (SIGTERM)', file=sys.stderr), os._exit(143)))
    try:
        from lava_dtss.deploy.lava_runtime import Terminated, install_stop_handlers
        install_stop_handlers()
        code = main()
    except KeyboardInterrupt as e:
        term = type(e).__name__ == 'Terminated'
        print(f'{"terminated (SIGTERM)" if term else "interrupted"}; Lava stopped', file=sys.stderr)
        code = 143 if term else 130
    except Exception as e:  # one clear line for bad input
        from lava_dtss.deploy.netx_file import NetXFormatError
        from lava_dtss.training.data import DatasetError
        from lava_dtss.deploy.lava_runtime import BackendUnavailable, LavaRunError
        if isinstance(e, OSError):     # e.g. a full disk while the --json report is written
            where = f'{e.filename}: ' if getattr(e, 'filename', None) else ''
            print(f'error: cannot write {where}{e.strerror or e}', file=sys.stderr)
            code = 2
        elif isinstance(e, (NetXFormatError, DatasetError, BackendUnavailable, LavaRunError, ValueError)):
            print(f'error: {e}', file=sys.stderr)
            code = 3 if isinstance(e, BackendUnavailable) else 4 if isinstance(e, LavaRunError) else 2
        else:
            raise
    sys.exit(code)
