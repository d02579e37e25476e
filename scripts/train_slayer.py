#!/usr/bin/env python
"""Train a DTSS spiking ViT (SLAYER blocks), then export it to NetX HDF5.

    python scripts/train_slayer.py                     # tiny preset on digits
    python scripts/train_slayer.py --dataset fashion-mnist --preset fmnist
    python scripts/train_slayer.py --fixed-t 4         # fixed-T baseline
    python scripts/train_slayer.py --recipe spikformer-cifar10 --data-dir DATA --device cuda   # Spikformer's recipe
    torchrun --nproc_per_node 2 scripts/train_slayer.py ...   # multi-process

Loss: cross-entropy + lambda_m * mask loss over the selected layer categories.
Writes to --out: log.jsonl (one JSON line per epoch), checkpoint.pt (atomic,
every epoch; --resume continues it exactly), metrics.json, model.net (HDF5).
With several processes, the ranks compare SHA-256 hashes of their final model
state at the end and print 'ranks identical: <hash>' (error if they differ).
The training itself is lava_dtss.train (lava_dtss/training/loop.py); this is
its command line.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from lava_dtss.commands import portable_command  # noqa: E402
import signal  # noqa: E402
if __name__ == '__main__':   # Ctrl-C while the libraries load: one line, exit 130
    signal.signal(signal.SIGINT, lambda *_: (sys.stderr.write('interrupted\n'), os._exit(130)))

from lava_dtss.model import CATEGORIES, PRESETS  # noqa: E402
from lava_dtss.model.presets import GENERIC_TRAINING, TRAINING  # noqa: E402
from lava_dtss.training import data, recipes  # noqa: E402
from lava_dtss.training.checkpoints import TrainingError  # noqa: E402
from lava_dtss.training.loop import TrainConfig, resolve, train  # noqa: E402

if __name__ == '__main__':
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _recipe(field: str) -> str:
    """``tiny 60, fmnist 8, others 60``: a recipe field's default per preset, for --help."""
    own = [f'{name} {TRAINING[name][field]}' for name in TRAINING]
    return ', '.join(own + [f'others {GENERIC_TRAINING[field]}'])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', default='digits', choices=sorted(data.DATASETS),
                   help='dataset (default: digits, bundled with scikit-learn)')
    p.add_argument('--data-dir', default=None, help='dataset folder (fashion-mnist: Debian '
                   'package location by default; cifar10/100, imagenet: required)')
    p.add_argument('--preset', default=None, choices=sorted(PRESETS),
                   help='model preset (default: by dataset, tiny for digits)')
    p.add_argument('--t-max', type=int, default=None, help='maximum time steps T_max (default: preset)')
    p.add_argument('--fixed-t', type=int, default=None, metavar='T',
                   help='fixed-T baseline: DTSS off, every layer runs T steps')
    p.add_argument('--ann', action='store_true',
                   help='train the ANN twin instead: the same architecture with a real-valued activation '
                        '(clamp(x / threshold, 0, 1)) in place of every LIF, one time step, no DTSS and no '
                        'export (the reference of the sensitivity analysis and the energy comparison)')
    p.add_argument('--lambda-m', type=float, default=None,
                   help='mask-loss weight lambda_m (default: the preset\'s; ' + _recipe('lambda_m') + ')')
    p.add_argument('--mask-categories', default=None,
                   help=f'comma-separated layer categories in the mask loss, from {",".join(CATEGORIES)}; '
                        'CAT=W gives a category its own weight relative to lambda_m (default: the preset\'s; '
                        + _recipe('mask_categories') + ')')
    p.add_argument('--epochs', type=int, default=None, help='default: the preset\'s; ' + _recipe('epochs'))
    p.add_argument('--batch-size', type=int, default=64, help='per process')
    p.add_argument('--lr', type=float, default=None,
                   help='peak learning rate (AdamW, cosine schedule; default: the preset\'s; ' + _recipe('lr') + ')')
    p.add_argument('--lr-schedule', choices=('epoch', 'step'), default=None,
                   help='cosine steps once per epoch (a --resume with more --epochs continues exactly) or once '
                        'per batch (smooth decay within short runs, e.g. fine-tuning); default: the preset\'s; '
                        + _recipe('lr_schedule'))
    p.add_argument('--score-lr', type=float, default=None,
                   help='learning rate of the DTSS gate lengths (SGD, momentum 0.9: updates follow the size '
                        'of the task and mask-loss gradients, layer by layer); default: the preset\'s; '
                        + _recipe('score_lr'))
    p.add_argument('--mask-warmup', type=float, default=None, metavar='FRACTION',
                   help='keep the DTSS gates at their initial steps and leave out the mask loss for this '
                        'fraction of the training steps, while the network learns the task (default: the '
                        'preset\'s; ' + _recipe('mask_warmup') + ')')
    p.add_argument('--train-unselected', action='store_true',
                   help='also train the scores of layers outside --mask-categories (by the task loss '
                        'alone); by default they keep T_max/2 steps')
    p.add_argument('--freeze-scores', type=float, default=None, metavar='FRACTION',
                   help='stop training the DTSS gates after this fraction of the training steps, so the '
                        'weights adapt to the final time steps (1 = never freeze; default: the preset\'s; '
                        + _recipe('freeze_scores') + ')')
    p.add_argument('--init-from', default=None, metavar='CHECKPOINT',
                   help='start from the weights of a checkpoint of the same preset (any T_max, DTSS or '
                        'fixed-T; its DTSS scores are not used): fine-tuning from a common start')
    p.add_argument('--init-steps', default=None, metavar='K|CAT=K,...',
                   help='initial active steps of every DTSS gate (K), or per category (e.g. qkv=2,attn=2,mlp=2; '
                        'categories not named keep the default: T_max/2, or T_max with --init-from, where the '
                        'weights were trained for every step)')
    p.add_argument('--gates-from', default=None, metavar='CHECKPOINT',
                   help='set every DTSS gate to the active steps the same gate learned in CHECKPOINT (a DTSS '
                        'run of the same preset and T_max); with --lambda-m 0 --freeze-scores 0 the weights '
                        're-fit from --init-from with those gates fixed from the first step (two-stage DTSS)')
    p.add_argument('--val-size', type=int, default=0, metavar='N',
                   help='hold out N training images (a fixed split, the same for every --seed) as a '
                        'validation set, reported as val_accuracy: choose models on it, not on the test set')
    p.add_argument('--batches-per-epoch', type=int, default=None, metavar='N',
                   help='train on the first N batches of each (shuffled) epoch only')
    p.add_argument('--bn-calibration', type=int, default=2048, metavar='N',
                   help='before every evaluation and the export, re-estimate the BatchNorm statistics '
                        'on N training images with the current weights, layer by layer as the deployed '
                        '(eval-mode) network sees them (0: keep the running averages of training, which '
                        'lag behind the weights; default 2048)')
    p.add_argument('--eval-every', type=int, default=None, metavar='N',
                   help='re-estimate BatchNorm and evaluate every N epochs and after the last (the model does not '
                        'depend on it: evaluation touches no training state); default: the preset\'s; '
                        + _recipe('eval_every'))
    p.add_argument('--weight-decay', type=float, default=None,
                   help='AdamW weight decay of the weights (default: the preset\'s; ' + _recipe('weight_decay') + ')')
    p.add_argument('--label-smoothing', type=float, default=None, metavar='E',
                   help='cross-entropy against smoothed targets (1 - E on the label, E spread over all classes); '
                        'keeps the task gradient that reaches the DTSS gates alive once the training set is fit '
                        '(default: the preset\'s; ' + _recipe('label_smoothing') + ')')
    p.add_argument('--augment', type=int, default=None, metavar='PIXELS',
                   help='random-shift augmentation of up to PIXELS (default: 4 with horizontal flips '
                        'for cifar10/100, 0 otherwise; imagenet uses random resized crops)')
    p.add_argument('--config', action='append', default=[], metavar='FIELD=VALUE', dest='preset_fields',
                   help='override a field of the preset, VALUE in JSON, repeatable: e.g. --config attn_threshold=2.0 '
                        '--config embed_dim=96 (fields: threshold, voltage_decay, attn_threshold, attn_scale, '
                        'tau_grad, scale_grad, embed_dim, depth, heads, mlp_ratio, sps); stored in the checkpoint')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=None,
                   help='torch CPU threads (default: 1 for the tiny preset, which gains nothing from '
                        'more and so gives the same result on any machine; torch\'s default otherwise)')
    p.add_argument('--out', default='runs/default', help='output folder')
    p.add_argument('--resume', action='store_true', help='continue from OUT/checkpoint.pt')
    p.add_argument('--overwrite', action='store_true',
                   help='start afresh in an --out folder that holds an earlier run, replacing it '
                        '(without this flag, or --resume, such a folder is refused)')
    p.add_argument('--no-export', action='store_true', help='skip the NetX HDF5 export')
    p.add_argument('--max-batches', type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument('--recipe', default='lava-dtss', choices=sorted(recipes.RECIPES),
                   help='training recipe: lava-dtss (this project\'s: the options above) or Spikformer\'s '
                        'published one per data set (timm\'s RandAugment, random erasing, mixup/cutmix, label '
                        'smoothing, warm-up + cosine + cool-down, AdamW; docs/training.md), which sets '
                        '--dataset, --epochs, --batch-size, --lr and --weight-decay unless given')
    p.add_argument('--recipe-config', action='append', default=[], metavar='FIELD=VALUE', dest='recipe_fields',
                   help='override a field of a spikformer-* recipe, VALUE in JSON, repeatable: e.g. '
                        '--recipe-config warmup_epochs=5 (fields: ' + ', '.join(recipes.OVERRIDABLE) + ')')
    p.add_argument('--device', default='cpu',
                   help='torch device of the run: cpu (default), cuda, cuda:N or mps; the model, data, DTSS '
                        'scores and losses live there (checkpoints load on any device; export runs on CPU)')
    p.add_argument('--amp', default=None, choices=('bf16', 'fp16', 'off'),
                   help='autocast of the forward pass: bf16 (CPU, CUDA), fp16 (CUDA, with GradScaler) or off; '
                        'default: fp16 on CUDA under the spikformer-* recipes (their amp: True), off otherwise')
    args = p.parse_args(argv)
    try:
        return resolve(TrainConfig(**vars(args)), given=given_options(p, argv))
    except ValueError as e:
        p.error(str(e))


def given_options(parser, argv=None) -> set:
    """The destinations of the options given explicitly in ``argv`` (a recipe's
    values replace the others): ``parser`` parsed again with every default suppressed."""
    saved = {a.dest: a.default for a in parser._actions}
    try:
        for a in parser._actions:
            a.default = argparse.SUPPRESS
        return set(vars(parser.parse_known_args(argv)[0]))
    finally:
        for a in parser._actions:
            a.default = saved[a.dest]


def main(argv=None):
    return train(parse_args(argv), command=portable_command())


if __name__ == '__main__':
    try:
        main()
    except (TrainingError, data.DatasetError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
    except OSError as e:  # e.g. a full disk while writing a checkpoint or the export
        where = f' ({e.filename})' if getattr(e, 'filename', None) else ''
        print(f'error: cannot write the run\'s files{where}: {e.strerror or e}; '
              'the last complete checkpoint is intact', file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print('interrupted; the last checkpoint is intact', file=sys.stderr)
        sys.exit(130)
