#!/usr/bin/env python
"""The DTSS study (its protocol: lava_dtss/analysis/study.py, shown by --help).

    python scripts/study.py                  # Fashion-MNIST (fmnist preset, T_max 4)
    python scripts/study.py --quick          # digits, tiny budgets (minutes; what the tests run)
    python scripts/study.py --demo           # the default digits demo's recipe: DTSS vs fixed T 1, 2, 3, 4, 8
    python scripts/report.py                 # tables and plots of docs/results.md from results/
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lava_dtss.analysis import study  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=study.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='digits, tiny budgets: the code paths in minutes')
    p.add_argument('--demo', action='store_true',
                   help='the README demo in context: `python scripts/train_slayer.py` (DTSS, digits) beside the '
                        'same recipe at fixed T = 1, 2, 3, 4 and 8, each from scratch (results/digits-demo)')
    p.add_argument('--study', default='fashion-mnist', choices=sorted(n for n in study.STUDIES if n != 'digits-quick'),
                   help='the protocol (default fashion-mnist; fashion-mnist-2026-11: the first study\'s)')
    p.add_argument('--results', default=None, help='results folder (default results/<study>)')
    p.add_argument('--runs', default=None, help='checkpoints and logs (default runs/<study>)')
    p.add_argument('--stage', choices=('all', 'base', 'arms'), default='all',
                   help='base: pre-training, ANN twin and sensitivity analysis only; arms: also the sweep; '
                        'all: then the headline DTSS and fixed T_max models in Lava on the whole test split, '
                        'shipped to netx_models/ with their cards')
    p.add_argument('--reevaluate', action='store_true',
                   help='re-run only the evaluation and export of every finished arm (its command with '
                        '--resume: BatchNorm re-estimation, validation and test accuracy, fixed-point export '
                        'and counts) with the present code, keeping its training; then the headline')
    p.add_argument('--lava-samples', type=int, default=None,
                   help='test images for the Lava runs (default: the whole test split)')
    args = p.parse_args(argv)
    study.run_study(quick=args.quick, demo=args.demo, results=args.results, runs=args.runs, stage=args.stage,
                    reevaluate=args.reevaluate, lava_samples=args.lava_samples, name=args.study)
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except study.StudyError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
    except KeyError as e:     # a results file without a key the study needs
        print(f'error: a results file lacks the key {e.args[0] if e.args else e} (a half-copied or older '
              'results folder?)',
              file=sys.stderr)
        sys.exit(1)
    except (OSError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print('interrupted; finished arms are kept under results/', file=sys.stderr)
        sys.exit(130)
