#!/usr/bin/env python
"""One benchmark for the speeds every experiment here depends on, each printed
beside its reference run as a ratio (samples/s and peak memory).

    python scripts/benchmark.py                        # everything (about 10 min on 2 cores)
    python scripts/benchmark.py --skip-lava --skip-exit   # training only
    python scripts/benchmark.py --model M.net          # Lava part on another model file
    python scripts/benchmark.py --skip-train --skip-lava --skip-stock --exit-samples 10000   # early exit only
    python scripts/benchmark.py --skip-train --skip-lava --skip-exit --skip-stock --scale   # Lava at scale only

What each part measures: lava_dtss/analysis/benchmark.py (run_benchmark), which
this command line calls.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import signal  # noqa: E402
if __name__ == '__main__':   # Ctrl-C while the libraries load: one line, exit 130
    signal.signal(signal.SIGINT, lambda *_: (sys.stderr.write('interrupted\n'), os._exit(130)))

from lava_dtss.analysis.benchmark import (DEFAULT_MODEL, ROOT, BenchmarkConfig, run_benchmark,  # noqa: E402
                                          train_worker)

if __name__ == '__main__':
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--preset', default='fmnist', help='training benchmark preset (default fmnist)')
    p.add_argument('--batch-size', type=int, default=64, help='training batch (default 64)')
    p.add_argument('--train-steps', type=int, default=10, help='timed training steps per round (default 10)')
    p.add_argument('--rounds', type=int, default=3, help='alternating rounds; the best counts (default 3)')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s)')
    p.add_argument('--model', default=DEFAULT_MODEL,
                   help=f'NetX file for the Lava part (default {os.path.relpath(DEFAULT_MODEL, ROOT)})')
    p.add_argument('--data-dir', default=None, help='dataset folder of the model\'s data set')
    p.add_argument('--lava-samples', type=int, default=1000, help='test images per batched Lava run (default 1000)')
    p.add_argument('--single-samples', type=int, default=50, help='test images for the B=1 Lava run (default 50)')
    p.add_argument('--batch', type=int, default=100, help='Lava batch (default 100)')
    p.add_argument('--stock-steps', type=int, default=200, help='Lava steps of the stock NetX comparison (default 200)')
    p.add_argument('--skip-stock', action='store_true', help='skip the stock NetX comparison')
    p.add_argument('--skip-train', action='store_true')
    p.add_argument('--skip-lava', action='store_true')
    p.add_argument('--skip-exit', action='store_true', help='skip the early-exit comparison')
    p.add_argument('--exit-threshold', type=int, default=None, metavar='N',
                   help='margin threshold of the early-exit comparison (default: the one scripts/early_exit.py '
                        'chose on validation, results/early-exit/<model>.json)')
    p.add_argument('--exit-json', default=None, metavar='PATH',
                   help='write the early-exit comparison as JSON (e.g. results/early-exit/lava-MODEL.json)')
    p.add_argument('--exit-samples', type=int, default=1000,
                   help='test images of the early-exit comparison (default 1000; 10000: the whole test set)')
    p.add_argument('--out', default=None, metavar='PATH',
                   help='also write the report (what is printed, after a header with the command, date and '
                        'machine) to PATH, atomically at the end (e.g. results/benchmark/benchmark.md, which '
                        'scripts/report.py puts into docs/speed.md)')
    p.add_argument('--scale', action='store_true',
                   help='also the fused Lava runtime on Spikformer-4-384 (untrained, CIFAR-shaped inputs) beside the '
                        'fmnist model: samples/s and measured peak memory per --scale-batches')
    p.add_argument('--scale-batches', default='1,16,64', metavar='B,B,...',
                   help='Lava batches of --scale (default 1,16,64)')
    p.add_argument('--train-worker', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.scale_batches = tuple(int(b) for b in args.scale_batches.split(','))
    except ValueError:
        p.error(f'--scale-batches {args.scale_batches!r}: expected comma-separated integers, e.g. 1,16,64')
    if min(args.scale_batches) < 1:
        p.error('--scale-batches must be >= 1')
    for name in ('batch_size', 'train_steps', 'rounds', 'lava_samples', 'single_samples', 'batch', 'stock_steps',
                 'exit_samples'):
        if getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")} must be >= 1')
    if args.exit_threshold is not None and args.exit_threshold < 0:
        p.error(f'--exit-threshold must be an integer >= 0, got {args.exit_threshold}')
    if args.threads is not None and args.threads < 1:
        p.error('--threads must be >= 1')
    from lava_dtss.model import PRESETS
    if args.preset not in PRESETS:
        p.error(f'--preset {args.preset!r} is unknown; expected one of {sorted(PRESETS)}')
    if args.train_worker:   # one training measurement in this process (run_benchmark starts these itself)
        return train_worker(args.train_worker, args.preset, args.batch_size, args.train_steps, args.threads)
    if not (args.skip_lava and args.skip_exit) and not os.path.isfile(args.model):
        p.error(f'--model {args.model} does not exist (train and export one, e.g. python scripts/study.py, '
                'or pass another .net file)')
    if args.out:
        folder = os.path.dirname(os.path.abspath(args.out))
        if os.path.isdir(args.out) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            p.error(f'--out {args.out}: not a writable file path (a folder, or its folder is missing)')
    options = {k: v for k, v in vars(args).items() if k not in ('train_worker', 'out')}
    if not args.out:
        run_benchmark(BenchmarkConfig(**options))
        return 0
    import contextlib
    import io
    from lava_dtss.analysis.benchmark import report_header
    from lava_dtss.training.checkpoints import atomic_write
    captured = io.StringIO()

    class Tee(io.TextIOBase):
        def write(self, text):
            sys.__stdout__.write(text)
            captured.write(text)
            return len(text)

        def flush(self):
            sys.__stdout__.flush()

    from lava_dtss.commands import portable_command
    header = report_header(portable_command(['scripts/benchmark.py'] + (argv if argv is not None else sys.argv[1:])))
    print(header)
    with contextlib.redirect_stdout(Tee()):
        run_benchmark(BenchmarkConfig(**options))
    text = header + '\n' + captured.getvalue()
    atomic_write(args.out, lambda f: f.write(text), mode='w')
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
    except Exception as e:   # the library's own clear messages, as one line
        from lava_dtss.deploy.netx_file import NetXFormatError
        from lava_dtss.training.data import DatasetError
        if isinstance(e, (NetXFormatError, DatasetError, ValueError, KeyError, OSError)):
            print(f'error: {e}', file=sys.stderr)
            sys.exit(1)
        raise
