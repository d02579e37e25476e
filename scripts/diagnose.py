#!/usr/bin/env python
"""Training health of a checkpoint (docs/training.md): per-layer firing rates,
silent and saturated neurons, surrogate activity, gradient norms, and with
--export the float model against its fixed-point export.

    python scripts/diagnose.py RUN/checkpoint.pt                # 512 training images
    python scripts/diagnose.py RUN/checkpoint.pt --export --json RUN/diagnosis.json
    python scripts/diagnose.py --levers results/fashion-mnist-levers    # the table of docs/training.md
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('checkpoint', nargs='?', help='checkpoint.pt of scripts/train_slayer.py')
    p.add_argument('--levers', metavar='FOLDER', help='print the markdown table of the runs under FOLDER instead')
    p.add_argument('--images', type=int, default=512, help='training images of the measured batch (default 512)')
    p.add_argument('--export', action='store_true',
                   help='also compare the float model with its fixed-point NetX export on validation images')
    p.add_argument('--val-images', type=int, default=1000, help='validation images for --export (default 1000)')
    p.add_argument('--data-dir', default=None, help='dataset folder (default: the one the run used)')
    p.add_argument('--json', default=None, help='also write the report to this JSON file (atomically)')
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    if args.images < 2 or args.val_images < 1 or args.threads < 1:
        p.error('--images must be >= 2, --val-images and --threads >= 1')
    if (args.checkpoint is None) == (args.levers is None):
        p.error('give a checkpoint, or --levers FOLDER')
    if args.json:       # before the work; the error named only a temporary file (issue 26)
        from lava_dtss.training.checkpoints import unwritable
        problem = unwritable(args.json)
        if problem:
            p.error(f'--json {args.json}: {problem}')
    if args.levers:
        from lava_dtss.analysis.training_health import levers_markdown
        if not os.path.isdir(args.levers):
            print(f'error: --levers {args.levers}: no such folder', file=sys.stderr)
            return 1
        try:
            print(levers_markdown(args.levers))
        except (OSError, ValueError, KeyError, IndexError) as e:
            print(f'error: --levers {args.levers}: a run folder without a complete metrics.json and '
                  f'log.jsonl ({type(e).__name__}: {e})', file=sys.stderr)
            return 1
        return 0
    import torch
    from lava_dtss.analysis.training_health import export_agreement, format_health, layer_health
    from lava_dtss.training import data
    from lava_dtss.training.checkpoints import (TrainingError, load_checkpoint, model_from_checkpoint,
                                                write_json)
    torch.set_num_threads(args.threads)
    try:
        model, train_args = model_from_checkpoint(load_checkpoint(args.checkpoint), args.checkpoint)
        dataset = train_args.get('dataset') or 'digits'
        data_dir = args.data_dir or train_args.get('data_dir')
        train_set = data.load_dataset(dataset, 'train', data_dir)
        val_size = int(train_args.get('val_size') or 0)
        val_set = None
        if val_size:
            train_set, val_set = data.holdout_split(train_set, val_size)
        elif args.export:
            raise TrainingError(f'{args.checkpoint} was trained without --val-size: no validation split '
                                'to compare the export on (the test split is not used here)')
        torch.manual_seed(0)
        x, y = next(iter(data.make_loader(train_set, args.images, shuffle=True, seed=777)))
        report = layer_health(model, x, y)
        if args.export:
            n = min(args.val_images, len(val_set))
            vx, vy = next(iter(data.make_loader(val_set, n, shuffle=False, seed=0)))
            report['export'] = {**export_agreement(model, vx, vy, dataset), 'images': n}
        report.update(checkpoint=args.checkpoint, images=args.images)
        print(format_health(report))
        if args.json:
            write_json(args.json, report)
    except (TrainingError, data.DatasetError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except OSError as e:
        print(f'error: {e.filename or ""}: {e.strerror or e}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
