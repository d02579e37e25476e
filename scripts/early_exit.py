#!/usr/bin/env python
"""Per-sample early exit on the shipped models: accuracy against average steps
for the margin and confidence policies over their thresholds, the threshold
chosen on the validation split (fewest average steps within --budget-pp of the
full window's validation accuracy), test accuracy and steps reported at it.

    python scripts/early_exit.py                        # the models the Fashion-MNIST study shipped
    python scripts/early_exit.py --study fashion-mnist-2026-11   # the first study's (results/early-exit-2026-11)
    python scripts/early_exit.py --models netx_models/fmnist_fixed-t4.net --num-test 1000

Writes results/early-exit/<model>.json (atomically), the chosen thresholds into each
model's card (netx_models/<model>.json: run_lava.py --exit-policy margin uses them), the
figure early_exit.png and the
early-exit section of the page of the study the models come from (docs/results.md);
each study's models, folders and page: lava_dtss.analysis.exit_study.EXIT_STUDIES.
The work: lava_dtss.analysis.exit_study (policies: lava_dtss.deploy.early_exit).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from lava_dtss.commands import portable_command  # noqa: E402


def main(argv=None):
    from lava_dtss.analysis import exit_study
    root = exit_study.ROOT
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--study', default=exit_study.DEFAULT_EXIT_STUDY, choices=sorted(exit_study.EXIT_STUDIES),
                   help='whose shipped models, results folder, figure and page are the defaults below '
                        f'(default {exit_study.DEFAULT_EXIT_STUDY})')
    p.add_argument('--models', nargs='+', default=None, help="network files (default: the study's shipped models)")
    p.add_argument('--budget-pp', type=float, default=0.5,
                   help='allowed validation accuracy loss against the full window, in pp (default 0.5)')
    p.add_argument('--num-test', type=int, default=None, help='first N test images only (default: all)')
    p.add_argument('--data-dir', default=None, help='dataset folder (see train_slayer.py)')
    p.add_argument('--out', default=None, help="folder of the JSONs (default: the study's, e.g. results/early-exit)")
    p.add_argument('--figure', default=None, help="the figure (default: the study's figures/early_exit.png)")
    p.add_argument('--doc', default=None,
                   help="page whose early-exit section is (re)written (default: the study's; 'none': skip)")
    args = p.parse_args(argv)
    study = exit_study.exit_study(args.study)
    args.models = args.models or [os.path.join(root, 'netx_models', n + '.net') for n in study['models']]
    args.out = args.out or study['out']
    args.figure = args.figure or os.path.join(study['figures'], 'early_exit.png')
    args.doc = args.doc or study['doc']
    if not 0 <= args.budget_pp < 100:
        p.error(f'--budget-pp must be in [0, 100), got {args.budget_pp}')
    if args.num_test is not None and args.num_test < 1:
        p.error('--num-test must be >= 1')
    for m in args.models:
        if not os.path.isfile(m):
            p.error(f'--models: {m} does not exist')
    from lava_dtss.deploy import cards
    from lava_dtss.training.checkpoints import unusable_folder, unwritable, write_json
    # before the work (tens of seconds), not after it (issue 26)
    problem = unusable_folder(args.out)
    if problem:
        p.error(f'--out {args.out}: {problem}')
    for flag, path in (('--figure', args.figure), ('--doc', None if args.doc == 'none' else args.doc)):
        problem = path and unwritable(path)
        if problem:
            p.error(f'{flag} {path}: {problem}')
    os.makedirs(args.out, exist_ok=True)
    records = {}
    for m in args.models:
        rec = exit_study.model_exit_study(m, args.data_dir, args.budget_pp, num_test=args.num_test,
                                          log=lambda line: print(line, flush=True))
        rec['command'] = portable_command()
        name = os.path.splitext(os.path.basename(m))[0]
        write_json(os.path.join(args.out, name + '.json'), rec)
        if cards.read_card(m) is not None:   # the chosen thresholds go with the model (run_lava.py reads them)
            cards.record_exit_thresholds(m, rec, rec['command'])
        records[name] = rec
    exit_study.plot(records, exit_study.study_points(study['study']), args.figure)
    if args.doc != 'none':
        rel = os.path.relpath(args.figure, os.path.dirname(os.path.abspath(args.doc)))
        exit_study.write_section(args.doc, exit_study.markdown_section(args.out, rel, study['command']))
    print(f'wrote {args.out}/*.json, {args.figure}' + ('' if args.doc == 'none' else f' and {args.doc}'))
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
    except OSError as e:   # e.g. a full disk while the JSONs or the figure are written
        print(f'error: cannot write {e.filename or "the results"}: {e.strerror or e}', file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
