#!/usr/bin/env python
"""Per-module sensitivity of a trained spiking ViT to fewer time steps.

    python scripts/analyze.py --snn runs/.../pretrain/checkpoint.pt --ann runs/.../ann/checkpoint.pt \
        --out results/fashion-mnist/sensitivity.json

Two measures, per gated layer and per category (sps, qkv, attn, mlp):
1. distributions: the ANN twin's activations (clamp(x / threshold, 0, 1)) beside
   the SNN's spike rates over its first T steps, for T = 1..T_max, and the
   1-Wasserstein distance between them (why W1: lava_dtss/analysis/sensitivity.py);
2. accuracy on the validation split when only one category is cut to T steps
   (every other layer at T_max), on the trained SNN without retraining, with
   BatchNorm re-estimated for every cut as for every study arm (--bn-calibration).

Writes one JSON (histograms, distances, accuracies); scripts/report.py plots it.
The analysis itself is lava_dtss.analysis.sensitivity.sensitivity.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from lava_dtss.commands import portable_command  # noqa: E402
import signal  # noqa: E402
if __name__ == '__main__':   # Ctrl-C while the libraries load: one line, exit 130
    signal.signal(signal.SIGINT, lambda *_: (sys.stderr.write('interrupted\n'), os._exit(130)))

from lava_dtss.training import data  # noqa: E402
from lava_dtss.training.checkpoints import TrainingError, write_json  # noqa: E402

if __name__ == '__main__':
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _unwritable(path):
    """Why ``path`` cannot receive the report (checked before the run), or None."""
    from lava_dtss.training.checkpoints import unwritable
    return unwritable(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--snn', required=True, help='checkpoint of the trained SNN (fixed T = T_max or DTSS)')
    p.add_argument('--ann', required=True, help='checkpoint of its ANN twin (train_slayer.py --ann)')
    p.add_argument('--out', required=True, help='JSON file to write')
    p.add_argument('--images', type=int, default=1000, help='validation images for the distributions')
    p.add_argument('--data-dir', default=None)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--bn-calibration', type=int, default=2048, metavar='N',
                   help='training images on which BatchNorm is re-estimated for every cut, as the '
                        'study does for every arm (default 2048; 0: keep the checkpoint\'s statistics)')
    args = p.parse_args(argv)
    if args.images < 1:
        p.error('--images must be >= 1')
    if args.bn_calibration < 0:
        p.error(f'--bn-calibration must be >= 0, got {args.bn_calibration}')
    if args.threads is not None and args.threads < 1:
        p.error(f'--threads must be >= 1, got {args.threads}')
    problem = _unwritable(args.out)      # before the analysis (minutes), not after it
    if problem:
        p.error(f'--out {args.out}: {problem}')
    import torch
    from lava_dtss.analysis.sensitivity import sensitivity
    if args.threads:
        torch.set_num_threads(args.threads)
    result = sensitivity(args.snn, args.ann, images=args.images, data_dir=args.data_dir,
                         command=portable_command(), log=lambda line: print(line, flush=True),
                         bn_calibration=args.bn_calibration)
    write_json(args.out, result)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (TrainingError, data.DatasetError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
    except OSError as e:     # --out a folder, under /proc, a full disk
        print(f'error: {e.filename or ""}: {e.strerror or e}', file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
