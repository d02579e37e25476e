#!/usr/bin/env python
"""Run a NetX HDF5 network on Lava (CPU simulator, Loihi 2 fixed point) with
per-layer time-step gating, and check it against training-side inference.

    python scripts/run_lava.py                       # shipped digits model, 100 samples
    python scripts/run_lava.py --num-samples 360 --json report.json
    python scripts/run_lava.py --num-samples 360 --batch 100   # 100 samples per Lava step
    python scripts/run_lava.py --check-loihi         # static Loihi 2 fit report
    python scripts/run_lava.py --model FILE.net --input data.npy --save-spikes out.npz --save-layers all
                                                     # any NetX file on your data, outputs saved

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
from lava_dtss.commands import portable_command  # noqa: E402
DEFAULT_MODEL = os.path.join(ROOT, 'netx_models', 'digits_tiny_dtss.net')


def parse_args(argv=None):
    from lava_dtss.training.data import DATASETS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default=DEFAULT_MODEL, help='NetX HDF5 file (default: the shipped digits model)')
    p.add_argument('--dataset', default=None, choices=sorted(DATASETS),
                   help="test data (default: the file's dataset, else digits)")
    p.add_argument('--data-dir', default=None, help='dataset folder (see train_slayer.py)')
    p.add_argument('--num-samples', type=int, default=None, help='test samples to run (default 100)')
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
                        'as stock netx.hdf5.Network(skip_layers=1) (default: the input neuron runs, '
                        'driven by the data and by --input-bias, as stock NetX\'s Input block)')
    g = p.add_argument_group('your own data (any NetX file, no dataset needed; stock NetX timing)')
    g.add_argument('--input', default=None, metavar='FILE.npy',
                   help='input frames or spikes, time last: [C, H, W, T] or [N, T] (N = C*H*W, or the '
                        'size of a dense input), optionally a leading sample axis [S, ..., T] (samples '
                        'back to back); axes in --layout order. Stock files: values > 0 are spikes to '
                        'layer 1 (NetX\'s unary input; graded integers with --input-message-bits); into an '
                        'input neuron they are its synaptic input, truncated to integers as Lava\'s LIF '
                        'does. Our files and imported NIR graphs (layer-synchronous): integers '
                        '0..inputScale, round(inputScale x) of data x in [0, 1] (for 0/1 spikes or events '
                        'import with --input-scale 1)')
    g.add_argument('--input-bias', default=None, metavar='FILE.npy',
                   help='bias mantissa of the input neuron (file with an input neuron): [C, H, W] or [N] '
                        '(or one per sample [S, ...]), integers; as net.in_layer.neuron.bias_mant in '
                        'stock NetX. Without --input, the input is zero for --t-max steps per sample')
    g.add_argument('--layout', default='chw', choices=('chw', 'whc'),
                   help='order of the spatial axes of --input, --input-bias and --save-spikes: chw '
                        '(default; the file\'s shape, SLAYER/PyTorch) or whc (Lava/NetX processes; '
                        'lava-dl\'s ground-truth .npy files)')
    g.add_argument('--save-spikes', default=None, metavar='PATH',
                   help='write layer outputs (0/1) at every Lava step: PATH.npy one layer [C, H, W, K] '
                        '/ [N, K], PATH.npz one array per layer name; K = S*T in the file\'s own '
                        'layer-synchronous timing (our files, imported NIR graphs), S*T + the number of '
                        'conv and dense layers in stock timing (the steps the last sample needs to leave '
                        'the pipeline)')
    g.add_argument('--save-voltages', default=None, metavar='PATH',
                   help='write the voltage v of the same layers after every Lava step (after the reset of '
                        'the neurons that fired, as Lava\'s LIF.v), integers, same layout as --save-spikes')
    g.add_argument('--save-layers', default=None, metavar='NAMES',
                   help='comma-separated layer names (layer0, layer1, ... in stock files) or "all" '
                        '(default: the last layer)')
    g.add_argument('--num-layers', type=int, default=None, metavar='K',
                   help='run only the file\'s first K layers (layer/0 .. layer/K-1), as '
                        'netx.hdf5.Network(num_layers=K)')
    g.add_argument('--reset-offset', type=int, default=0, metavar='O',
                   help='phase of the --reset-interval resets, as netx.hdf5.Network(reset_offset=O)')
    g.add_argument('--input-message-bits', type=int, default=0, metavar='BITS',
                   help='0 (default): an input value is a unary spike; > 0: graded input values go to '
                        'layer 1 as they are (integers), as netx.hdf5.Network(input_message_bits=BITS)')
    p.add_argument('--exit-policy', default=None, choices=('never', 'margin', 'confidence'),
                   help='per-sample early exit with continuous batching (fused build, our files): after '
                        'every step the readout ends a sample when the two largest accumulated integer '
                        'logit sums z = sum_t (T_max W x_t + b) differ by --exit-threshold or more '
                        '(margin), or at T_max (never); the row then takes the next sample at the next '
                        'step. confidence needs a softmax and is refused in Lava (training side only: '
                        'scripts/early_exit.py)')
    p.add_argument('--exit-threshold', type=float, default=None, metavar='N',
                   help='margin threshold: an integer >= 0 in units of z (T_max times the file\'s '
                        'logits at the full window); default: the one in the model\'s card, which '
                        'scripts/early_exit.py chose on validation and wrote there')
    args = p.parse_args(argv)
    if args.input or args.input_bias:
        _check_user_data_args(args)
    else:
        given = [flag for flag, v in (('--layout', args.layout != 'chw'), ('--save-spikes', args.save_spikes),
                                      ('--save-voltages', args.save_voltages),
                                      ('--save-layers', args.save_layers), ('--num-layers', args.num_layers),
                                      ('--reset-offset', args.reset_offset),
                                      ('--input-message-bits', args.input_message_bits)) if v]
        if given:
            raise ValueError(f'{given[0]} goes with --input FILE.npy / --input-bias FILE.npy (your own data); '
                             'the dataset runs take none of these options')
    from lava_dtss.deploy.netx_file import MAX_T
    if args.reset_interval < 0:
        raise ValueError(f'--reset-interval must be >= 0 steps (0: never), got {args.reset_interval}')
    if args.batch < 1:
        raise ValueError(f'--batch must be at least 1 sample per Lava step, got {args.batch}')
    if args.build == 'loihi' and args.batch != 1:
        raise ValueError(f'--build loihi runs one sample per window (standard processes have no sample '
                         f'axis): --batch must be 1, got {args.batch}')
    if args.build == 'loihi' and (args.timing != 'auto' or args.reset_interval):
        raise ValueError('--build loihi has its own pipeline (offsets and a reset every window, '
                         'docs/loihi.md): --timing and --reset-interval apply to the fused runtime only')
    if args.build == 'loihi' and args.no_gating:
        raise ValueError('--build loihi always gates (the gate is part of the network on the chip); '
                         'drop --no-gating')
    if args.exit_policy is not None:
        from lava_dtss.deploy.early_exit import check_policy
        t = args.exit_threshold
        args.exit_threshold_source = '--exit-threshold'
        if t is None and args.exit_policy == 'margin':   # the threshold the model's card carries
            from lava_dtss.deploy.cards import card_exit_threshold
            t, args.exit_threshold_source = card_exit_threshold(args.model, args.exit_policy)
        args.exit_threshold = check_policy(args.exit_policy, int(t) if t is not None and t == t and abs(t) < 2**63
                                           and t == int(t) else t)
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


def _check_user_data_args(args):
    """Options that do not go with --input / --input-bias: one line each."""
    for flag, given in (('--dataset', args.dataset), ('--data-dir', args.data_dir),
                        ('--num-samples', args.num_samples), ('--check-loihi', args.check_loihi or None),
                        ('--no-gating', args.no_gating or None), ('--gated-only', args.gated_only or None),
                        ('--exit-policy', args.exit_policy), ('--exit-threshold', args.exit_threshold)):
        if given is not None:
            raise ValueError(f'{flag} does not go with --input/--input-bias (your data replace the '
                             'dataset; the samples are those of the file)')
    if args.build != 'fused':
        raise ValueError('--input/--input-bias run on the fused runtime; drop --build loihi')
    if args.batch != 1:
        raise ValueError(f'--batch {args.batch} does not go with --input/--input-bias: the samples of the '
                         'file run back to back as one stream (batch 1)')
    if args.num_layers is not None and args.num_layers < 1:
        raise ValueError(f'--num-layers must be >= 1, got {args.num_layers}')
    if args.reset_offset < 0:
        raise ValueError(f'--reset-offset must be >= 0 steps, got {args.reset_offset}')
    if not 0 <= args.input_message_bits <= 24:
        raise ValueError(f'--input-message-bits must be in 0..24, got {args.input_message_bits}')
    for flag, path in (('--save-spikes', args.save_spikes), ('--save-voltages', args.save_voltages)):
        if not path:
            continue
        if not path.endswith(('.npy', '.npz')):
            raise ValueError(f'{flag} {path}: expected a .npy (one layer) or .npz file name')
        problem = _unwritable(path)
        if problem:
            raise ValueError(f'{flag} {path}: {problem}')
        layers = args.save_layers.split(',') if args.save_layers and args.save_layers != 'all' else []
        if path.endswith('.npy') and (args.save_layers == 'all' or len(layers) > 1):
            raise ValueError(f'{flag} {path}: several layers need a .npz file')
    if args.save_layers and not (args.save_spikes or args.save_voltages):
        raise ValueError('--save-layers needs --save-spikes PATH (or --save-voltages PATH)')


def _unwritable(path):
    """Why ``path`` cannot receive the report (checked before the run), or None."""
    from lava_dtss.training.checkpoints import unwritable
    return unwritable(path)


def main(argv=None):
    args = parse_args(argv)
    if args.input or args.input_bias:
        return run_user_data(args)
    if args.num_samples is None:
        args.num_samples = 100
    from lava_dtss.deploy import lava_runtime, loihi_build
    from lava_dtss.deploy.loihi_check import check_file
    from lava_dtss.deploy.run_report import agreement_line
    from lava_dtss.training.checkpoints import write_json

    if args.check_loihi:
        bad = check_file(args.model, build=args.build, t_max=args.t_max,
                         skip_input_neuron=args.skip_input_neuron)
        for c in bad:
            print(f'error: layer {c.name}: {"; ".join(c.violations)}', file=sys.stderr)
        return 1 if bad else 0
    if args.exit_policy == 'margin':
        print(f'exit threshold {args.exit_threshold} from {args.exit_threshold_source}', flush=True)
    report, results = lava_runtime.run_file(
        args.model, num_samples=args.num_samples, dataset=args.dataset, data_dir=args.data_dir,
        batch=args.batch, t_max=args.t_max, gating=False if args.no_gating else True if args.gated_only else None,
        backend=args.backend, max_memory=None if args.max_memory_gb is None else int(args.max_memory_gb * 2**30),
        timing=args.timing, reset_interval=args.reset_interval, skip_input_neuron=args.skip_input_neuron,
        build=args.build, command=portable_command(),
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


def run_user_data(args):
    """--input / --input-bias: run the file on the user's data, print what each
    layer did, save the chosen layers' outputs (--save-spikes)."""
    from lava_dtss.deploy.user_data import run_input, save_spikes
    from lava_dtss.training.checkpoints import write_json
    layers = args.save_layers
    saving = args.save_spikes or args.save_voltages
    save = None if not saving else layers.split(',') if layers and layers != 'all' else layers or 'last'
    report, res, spec = run_input(
        args.model, args.input, input_bias_path=args.input_bias, layout=args.layout, t_max=args.t_max,
        num_layers=args.num_layers, skip_input_neuron=args.skip_input_neuron, timing=args.timing,
        reset_interval=args.reset_interval, reset_offset=args.reset_offset,
        input_message_bits=args.input_message_bits, save_layers=save,
        save_voltages=bool(args.save_voltages), backend=args.backend,
        max_memory=None if args.max_memory_gb is None else int(args.max_memory_gb * 2**30),
        command=portable_command())
    print(f'\nmodel {args.model}  ({report["processes"]} Lava processes, {report["timing"]} timing)')
    print(f'{report["num_samples"]} sample(s) x {report["steps_per_sample"]} steps, '
          f'{report["lava_steps"]} Lava steps')
    print(f'{"layer":22s} {"spikes":>8s} {"synops":>12s} {"updates":>12s}')
    for name, e in report['layers'].items():
        print(f'{name:22s} {e["spikes"]:8d} {e["synops"]:12d} {e["neuron_updates"]:12d}')
    print(f'wall time: {report["wall_s"]:.2f} s (start-up {report["startup_s"]:.2f} s)')
    if args.save_spikes:
        save_spikes(args.save_spikes, res.spikes, args.layout)
        print(f'wrote {args.save_spikes} ({", ".join(res.spikes)}; layout {args.layout}, time last)')
    if args.save_voltages:
        save_spikes(args.save_voltages, res.voltages, args.layout, '--save-voltages')
        print(f'wrote {args.save_voltages} (voltages of {", ".join(res.voltages)}; layout {args.layout}, '
              'time last)')
    if args.json:
        write_json(args.json, report)
        print(f'wrote {args.json}')
    return 0


def print_exit_report(r, labels):
    from lava_dtss.deploy.run_report import agreement_line
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
    from lava_dtss.deploy.run_report import format_run_report
    print('\n' + '\n'.join(format_run_report(r, labels)))


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
