"""The training loop, as one function a user can call (in the manner of
nanoGPT's ``train.py``: readable top to bottom in one sitting)::

    import lava_dtss
    metrics = lava_dtss.train(dataset='digits', epochs=2, out='runs/mine')

``train`` trains a DTSS spiking ViT (SLAYER blocks), evaluates it and exports
it to NetX HDF5. ``scripts/train_slayer.py`` is its command line: every option
there is a field of :class:`TrainConfig` (``--lambda-m`` is ``lambda_m``), with
the same default, and :func:`resolve` checks them with the same messages.

Loss: cross-entropy + lambda_m * mask loss over the selected layer categories.
Writes to ``out``: log.jsonl (one JSON line per epoch), checkpoint.pt (atomic,
every epoch; ``resume`` continues it exactly), metrics.json, model.net (HDF5)
and model.json (its card). Under ``torchrun`` the ranks compare SHA-256 hashes
of their final model state at the end and print 'ranks identical: <hash>'
(error if they differ).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from ..model.dtss import CATEGORIES, DTSSGate, is_gate_parameter
from ..model.presets import PRESETS, get_config, training_defaults
from ..model.vit import SpikingViT
from . import data, recipes
from .checkpoints import (TrainingError, atomic_write, evaluate, init_distributed, init_weights,
                          learned_gate_steps, load_checkpoint, recalibrate_batchnorm, rng_state,
                          save_checkpoint, set_rng_state, write_json)

MAX_T = 256        # time steps a run may ask for (memory grows linearly with T)
MAX_SHIFT = 32     # largest augmentation shift, pixels
DEFAULT_PRESET = {'digits': 'tiny', 'fashion-mnist': 'fmnist', 'cifar10': 'spikformer-4-384',
                  'cifar100': 'spikformer-4-384', 'imagenet': 'spikformer-8-768'}
RUN_FILES = ('checkpoint.pt', 'log.jsonl', 'metrics.json', 'model.net', 'model.json')


@dataclass
class TrainConfig:
    """One training run; the fields, their order and defaults are those of
    ``scripts/train_slayer.py`` (its ``--help`` explains each)."""
    dataset: str = 'digits'
    data_dir: str | None = None
    preset: str | None = None               # default: by dataset (DEFAULT_PRESET)
    t_max: int | None = None                # default: the preset's
    fixed_t: int | None = None              # fixed-T baseline: DTSS off, every layer runs T steps
    ann: bool = False                       # the ANN twin (one step, no DTSS, no export)
    lambda_m: float | None = None           # None here and below: the preset's (presets.training_defaults)
    mask_categories: str | tuple | dict | None = None   # 'CAT[=W],...', resolved to a tuple
    epochs: int | None = None
    batch_size: int = 64                    # per process
    lr: float | None = None
    lr_schedule: str | None = None          # cosine per 'epoch' or per 'step' (batch)
    score_lr: float | None = None
    mask_warmup: float | None = None
    train_unselected: bool = False
    freeze_scores: float | None = None
    init_from: str | None = None
    init_steps: str | int | dict | None = None   # 'K' or 'CAT=K,...', resolved to {'*' or CAT: K}
    gates_from: str | None = None
    val_size: int = 0
    batches_per_epoch: int | None = None
    bn_calibration: int = 2048
    eval_every: int | None = None           # evaluate (and re-estimate BatchNorm) every N epochs and at the end
    weight_decay: float | None = None
    label_smoothing: float | None = None    # cross-entropy against (1 - e) one-hot + e / classes
    augment: int | None = None
    preset_fields: tuple | list | dict = ()   # --config: preset fields overridden: 'FIELD=VALUE' items (JSON values) or a dict
    seed: int = 0
    threads: int | None = None
    out: str = 'runs/default'
    resume: bool = False
    overwrite: bool = False
    no_export: bool = False
    max_batches: int | None = None          # tests only: batches per epoch and per evaluation
    mask_weights: dict = field(default_factory=dict)   # set by resolve from mask_categories
    recipe: str = 'lava-dtss'               # training recipe (lava_dtss/training/recipes.py)
    recipe_fields: tuple | list | dict = ()   # --recipe-config: 'FIELD=VALUE' items or a dict; resolved to the recipe's fields
    device: str = 'cpu'                     # torch device of the model, data and losses: cpu, cuda, cuda:N, mps
    amp: str | None = None                  # autocast: 'bf16', 'fp16' (CUDA, with GradScaler) or 'off'; None: the recipe's
    recipe_applied: bool = False            # set by resolve: the recipe's values are in the shared fields


# preset fields a run may override with --config (the rest follow the data set, or have their own option)
OVERRIDABLE = ('embed_dim', 'depth', 'heads', 'mlp_ratio', 'sps', 'threshold', 'voltage_decay', 'attn_threshold',
               'attn_scale', 'tau_grad', 'scale_grad')


def preset_overrides(items) -> dict:
    """``{field: value}`` from ``--config FIELD=VALUE`` items (VALUE in JSON: ``2.0``,
    ``[[16, 1], [32, 2]]``) or a dict; ``ValueError`` naming the item otherwise."""
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items or ():
            name, sep, value = str(item).partition('=')
            if not sep:
                raise ValueError(f'--config {item!r}: expected FIELD=VALUE')
            if name.strip() not in OVERRIDABLE:
                raise ValueError(f'--config: unknown or fixed field {name.strip()!r}; choose from '
                                 f'{", ".join(OVERRIDABLE)}')
            try:
                pairs.append((name.strip(), json.loads(value)))
            except json.JSONDecodeError:
                raise ValueError(f'--config {item!r}: VALUE must be JSON (a number, or a list for sps)') from None
    out = {}
    for name, value in pairs:
        if name not in OVERRIDABLE:
            raise ValueError(f'--config: unknown or fixed field {name!r}; choose from {", ".join(OVERRIDABLE)}')
        if name == 'sps':
            ok = isinstance(value, (list, tuple)) and all(
                isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(v, int) and v >= 1 for v in s)
                for s in value) and len(value) > 0
        elif name in ('embed_dim', 'depth', 'heads', 'mlp_ratio'):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if not ok:
            raise ValueError(f'--config {name}={json.dumps(value)}: expected '
                             + ('a list of [channels, stride] pairs' if name == 'sps' else
                                'a whole number >= 1' if name in ('embed_dim', 'depth', 'heads', 'mlp_ratio')
                                else 'a finite number > 0'))
        out[name] = float(value) if name not in ('sps', 'embed_dim', 'depth', 'heads', 'mlp_ratio') else value
    return out


def resolve(config: TrainConfig, given=None) -> TrainConfig:
    """``config`` checked, with ``mask_categories`` resolved to a tuple (and
    ``mask_weights``), ``init_steps`` to ``{'*' or category: K}`` or None, and
    ``ann`` implying ``fixed_t = 1`` and ``no_export``. Raises ``ValueError``
    with one line naming the option (the command line's spelling).

    A recipe other than ``lava-dtss``: ``recipe_fields`` resolved to its fields,
    and its values put into the fields ``recipes.SHARED`` (dataset, epochs, ...)
    except those named in ``given`` (set explicitly) or differing from
    TrainConfig's defaults; ``amp`` None resolved to the recipe's on CUDA, else 'off'."""
    args = dataclasses.replace(config)
    args.recipe_fields = recipes.resolve_fields(args.recipe, args.recipe_fields)
    rf = args.recipe_fields
    if rf and not args.recipe_applied:
        default = TrainConfig()
        given = set(given or ()) | {n for n in recipes.SHARED if getattr(args, n) != getattr(default, n)}
        for name in recipes.SHARED:
            if name not in given:
                setattr(args, name, rf[name])
        args.recipe_applied = True
    for name, value, choices in (('dataset', args.dataset, sorted(data.DATASETS)),
                                 ('preset', args.preset, [None] + sorted(PRESETS))):
        if value not in choices:   # the command line's choices; argparse refuses these first there
            raise ValueError(f'--{name.replace("_", "-")}: invalid choice {value!r} (choose from '
                             f'{", ".join(repr(c) for c in choices if c is not None)})')
    recipe = training_defaults(args.preset or DEFAULT_PRESET[args.dataset])
    for name, value in recipe.items():   # options left out: the preset's recipe
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name, value, choices in (('lr_schedule', args.lr_schedule, ['epoch', 'step']),):
        if value not in choices:   # the command line's choices; argparse refuses these first there
            raise ValueError(f'--{name.replace("_", "-")}: invalid choice {value!r} (choose from '
                             f'{", ".join(repr(c) for c in choices if c is not None)})')
    weights = {}
    if isinstance(args.mask_categories, str):
        for item in (c for c in args.mask_categories.split(',') if c):
            name, _, w = item.partition('=')
            if name not in CATEGORIES:
                raise ValueError(f'--mask-categories: unknown {name!r}; choose from {",".join(CATEGORIES)}')
            try:
                weights[name] = float(w) if w else 1.0
            except ValueError:
                raise ValueError(f'--mask-categories: weight of {name} must be a number, got {w!r}') from None
            if not math.isfinite(weights[name]) or weights[name] < 0:
                raise ValueError(f'--mask-categories: weight of {name} must be a finite number >= 0')
    else:   # already resolved: categories (a tuple, with mask_weights) or {category: weight}
        given = args.mask_categories if isinstance(args.mask_categories, dict) else \
            {c: args.mask_weights.get(c, 1.0) for c in args.mask_categories}
        for name, w in given.items():
            if name not in CATEGORIES:
                raise ValueError(f'--mask-categories: unknown {name!r}; choose from {",".join(CATEGORIES)}')
            if not math.isfinite(float(w)) or float(w) < 0:
                raise ValueError(f'--mask-categories: weight of {name} must be a finite number >= 0')
            weights[name] = float(w)
    args.mask_categories = tuple(weights)
    args.mask_weights = weights
    args.preset_fields = preset_overrides(args.preset_fields)
    init = {}
    if isinstance(args.init_steps, int) and not isinstance(args.init_steps, bool):
        args.init_steps = str(args.init_steps)
    if isinstance(args.init_steps, dict):
        items = [(n if n != '*' else '', str(k)) for n, k in args.init_steps.items()]
    else:
        items = [item.rpartition('=')[::2] for item in
                 (args.init_steps.split(',') if args.init_steps is not None else ())]
    for name, k in items:
        if name and name not in CATEGORIES:
            raise ValueError(f'--init-steps: unknown category {name!r}; choose from {",".join(CATEGORIES)}')
        if not k.strip().isdigit() or int(k) < 1:
            raise ValueError(f'--init-steps: expected K or CAT=K,... with whole numbers K >= 1, '
                             f'got {config.init_steps!r}')
        if (name or '*') in init:
            raise ValueError(f'--init-steps {config.init_steps!r} gives '
                             f'{"category " + repr(name) if name else "the default K"} twice; '
                             'give each once')
        init[name or '*'] = int(k)
    args.init_steps = init or None
    for name in ('epochs', 'batch_size', 'batches_per_epoch', 'eval_every'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f'--{name.replace("_", "-")} must be >= 1')
    if args.ann and args.fixed_t not in (None, 1):
        raise ValueError('--ann runs one time step: leave out --fixed-t')
    if args.ann:
        args.fixed_t, args.no_export = 1, True
    for name in ('fixed_t', 't_max'):
        v = getattr(args, name)
        if v is not None and not 1 <= v <= MAX_T:
            raise ValueError(f'--{name.replace("_", "-")} must be in 1..{MAX_T} time steps, got {v}')
    if args.fixed_t is not None and args.t_max is not None and args.t_max != args.fixed_t and not args.ann:
        raise ValueError(f'--fixed-t {args.fixed_t} sets T_max = {args.fixed_t}; leave out --t-max {args.t_max}')
    if args.gates_from and (args.fixed_t is not None or args.ann):
        raise ValueError('--gates-from sets DTSS gates: leave out --fixed-t and --ann')
    if args.init_steps and args.fixed_t is not None and not args.ann:
        raise ValueError('--init-steps sets the DTSS gates\' first lengths; --fixed-t has no gates '
                         '(every layer runs T steps): leave out one of them')
    if args.gates_from and args.init_steps:
        raise ValueError('--gates-from sets every gate: leave out --init-steps')
    if not 0 <= args.seed < 2**32:
        raise ValueError(f'--seed must be in 0..{2**32 - 1} (numpy\'s seed range), got {args.seed}')
    if args.threads is not None and args.threads < 1:
        raise ValueError('--threads must be >= 1')
    if args.augment is not None and not 0 <= args.augment <= MAX_SHIFT:
        raise ValueError(f'--augment must be in 0..{MAX_SHIFT} pixels, got {args.augment}')
    for name in ('mask_warmup', 'freeze_scores'):
        v = getattr(args, name)
        if not (math.isfinite(v) and 0 <= v <= 1):
            raise ValueError(f'--{name.replace("_", "-")} is a fraction of the training steps: 0..1, got {v}')
    if args.mask_warmup > args.freeze_scores:
        raise ValueError(f'--mask-warmup {args.mask_warmup} is after --freeze-scores {args.freeze_scores}: '
                         'the scores would never train')
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f'--lr must be a finite number > 0, got {args.lr}')
    for name in ('score_lr', 'weight_decay'):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) >= 0):
            raise ValueError(f'--{name.replace("_", "-")} must be a finite number >= 0')
    if args.resume and args.overwrite:
        raise ValueError('--resume and --overwrite exclude each other')
    for name in ('val_size', 'bn_calibration'):
        if getattr(args, name) < 0:
            raise ValueError(f'--{name.replace("_", "-")} must be >= 0')
    if not (math.isfinite(args.label_smoothing) and 0 <= args.label_smoothing < 1):
        raise ValueError(f'--label-smoothing must be in [0, 1), got {args.label_smoothing}')
    if not math.isfinite(args.lambda_m) or args.lambda_m < 0:
        raise ValueError('--lambda-m must be a finite number >= 0')
    if rf:
        if args.dataset != rf['dataset']:
            raise ValueError(f'--recipe {args.recipe} is for --dataset {rf["dataset"]}, not {args.dataset}')
        if args.augment is not None:
            raise ValueError(f'--augment is the lava-dtss recipe\'s random shift; --recipe {args.recipe} augments '
                             'with timm\'s transforms (change them with --recipe-config)')
        if args.lr_schedule != 'epoch':
            raise ValueError(f'--lr-schedule belongs to the lava-dtss recipe; --recipe {args.recipe} steps timm\'s '
                             'CosineLRScheduler once per epoch (leave out --lr-schedule)')
        if rf['warmup_epochs'] + rf['cooldown_epochs'] >= args.epochs:
            raise ValueError(f'--epochs {args.epochs} leaves no cosine epochs after the recipe\'s '
                             f'{rf["warmup_epochs"]} warm-up and {rf["cooldown_epochs"]} cool-down epochs; pass more '
                             '--epochs or --recipe-config warmup_epochs=N / cooldown_epochs=N')
        if recipes.mixup_active(rf) and args.batch_size % 2:
            raise ValueError(f'--batch-size {args.batch_size}: mixup/cutmix (timm) needs an even batch size')
    device = check_device(args.device)
    if args.amp is None:
        args.amp = rf.get('amp', 'off') if device.type == 'cuda' else 'off'
    if args.amp not in AMP:
        raise ValueError(f'--amp: invalid choice {args.amp!r} (choose from {", ".join(map(repr, AMP))})')
    if args.amp == 'fp16' and device.type != 'cuda':
        raise ValueError(f'--amp fp16 needs a CUDA device (float16 autocast with GradScaler); on --device '
                         f'{args.device} use --amp bf16 or --amp off')
    if args.amp == 'bf16' and (device.type not in ('cpu', 'cuda') or (
            device.type == 'cuda' and not torch.cuda.is_bf16_supported())):
        raise ValueError(f'--amp bf16: --device {args.device} has no bfloat16 autocast here; use --amp off'
                         + (' or fp16' if device.type == 'cuda' else ''))
    return args


AMP = ('off', 'bf16', 'fp16')


def check_device(name: str) -> torch.device:
    """``torch.device(name)`` if this machine has it; ``ValueError`` (one line) otherwise."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f'--device {name!r}: not a torch device; expected cpu, cuda, cuda:N or mps') from None
    if device.type == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f'--device {name}: this machine has no CUDA device (torch.cuda.is_available() '
                             'is False); use --device cpu')
        if device.index is not None and device.index >= count:
            raise ValueError(f'--device {name}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}')
    elif device.type == 'mps':
        if not torch.backends.mps.is_available():
            raise ValueError(f'--device {name}: this machine has no Apple MPS device; use --device cpu')
    elif device.type != 'cpu':
        raise ValueError(f'--device {name}: expected cpu, cuda, cuda:N or mps')
    return device


def train(config: TrainConfig | argparse.Namespace | dict | None = None, *, command: str | None = None,
          **overrides) -> dict:
    """Train, evaluate and export one model as ``config`` says (a
    :class:`TrainConfig`, the command line's ``argparse.Namespace``, a dict, or
    None for the defaults), with fields ``overrides`` replaced. Returns the
    metrics written to ``out/metrics.json`` (on rank 0 of a ``torchrun`` job;
    the other ranks return ``{}``). ``command``: what the files record as the
    command that made them (default: this call, ``lava_dtss.train(...)``).

    Raises ``ValueError`` (bad options), ``TrainingError`` (a run that cannot
    continue: NaN loss, bad checkpoint, occupied output folder),
    ``DatasetError`` and ``OSError``; the last complete checkpoint stays intact."""
    if isinstance(config, argparse.Namespace):
        config = vars(config)
    if isinstance(config, dict):
        config = TrainConfig(**config)
    args = resolve(dataclasses.replace(config or TrainConfig(), **overrides), given=set(overrides))
    if command is None:
        default = resolve(TrainConfig())
        shown = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.name != 'recipe_applied'}
        shown['mask_categories'] = shown.pop('mask_weights')   # {category: weight}, which train accepts
        if args.recipe_fields:   # the fields given with --recipe-config only
            base = recipes.RECIPES[args.recipe]
            shown['recipe_fields'] = {k: v for k, v in args.recipe_fields.items() if v != base[k]}
        changed = [f'{k}={v!r}' for k, v in shown.items()
                   if v != getattr(default, 'mask_weights' if k == 'mask_categories' else k)]
        command = f'lava_dtss.train({", ".join(changed)})'
    rank, world, device = init_distributed(args.device)
    master = rank == 0
    preset = args.preset or DEFAULT_PRESET[args.dataset]
    threads = args.threads or (1 if preset == 'tiny' else None)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)

    # ---- data -------------------------------------------------------------
    info = data.DATASETS[args.dataset]
    train_set = data.load_dataset(args.dataset, 'train', args.data_dir)  # fixed split: the same test set for every seed
    test_set = data.load_dataset(args.dataset, 'test', args.data_dir)
    val_set = None
    if args.val_size:
        train_set, val_set = data.holdout_split(train_set, args.val_size)
    rf = args.recipe_fields
    fit_set = train_set   # what the training batches come from (BatchNorm calibration: train_set)
    if rf:   # timm's transforms; ImageNet's evaluation: timm's resize and centre crop too
        augment = recipes.train_transform(rf, info.image_shape[-1])
        if args.dataset == 'imagenet':
            plain = recipes.eval_transform(rf, info.image_shape[-1])
            train_set = data.load_dataset('imagenet', 'train', args.data_dir, transform=plain)
            test_set = data.load_dataset('imagenet', 'test', args.data_dir, transform=plain)
            fit_set = data.load_dataset('imagenet', 'train', args.data_dir, transform=augment)
            if args.val_size:   # the same fixed split of both
                train_set, val_set = data.holdout_split(train_set, args.val_size)
                fit_set, _ = data.holdout_split(fit_set, args.val_size)
        else:
            fit_set = recipes.AugmentedDataset(train_set, augment)
    if master:
        prepare_out(args)

    # ---- model ------------------------------------------------------------
    t_max = args.fixed_t or args.t_max
    try:
        cfg = get_config(preset, num_classes=info.num_classes, t_max=t_max, **args.preset_fields)
    except (TypeError, ValueError) as e:
        raise TrainingError(f'--config {args.preset_fields}: not a valid {preset} model ({e})') from None
    if (cfg.in_channels, cfg.image_size, cfg.image_size) != info.image_shape:
        raise TrainingError(f'preset {preset} expects images {cfg.in_channels}x{cfg.image_size}x'
                            f'{cfg.image_size}, dataset {args.dataset} has {info.image_shape}')
    model = SpikingViT(cfg, dtss=args.fixed_t is None, neuron_impl='ann' if args.ann else 'fast').to(device)
    if args.init_from and not args.resume:
        init_weights(model, args.init_from)
    if args.init_steps or args.init_from:
        default = cfg.t_max if args.init_from else max(1, cfg.t_max // 2)
        for g in model.gates():
            k = (args.init_steps or {}).get(g.category, (args.init_steps or {}).get('*', default))
            if k > cfg.t_max:
                raise TrainingError(f'--init-steps {k} exceeds T_max = {cfg.t_max}')
            g.reset_steps(k)
    if args.gates_from and not args.resume:
        learned = learned_gate_steps(args.gates_from, cfg.t_max)
        mine = {n: g for n, g in model.named_modules() if isinstance(g, DTSSGate)}
        if set(learned) != set(mine):
            raise TrainingError(f'--gates-from {args.gates_from}: its gates ({len(learned)}) are not those of '
                                f'preset {preset} ({len(mine)}); expected a DTSS run of the same preset')
        for n, g in mine.items():
            if learned[n] > cfg.t_max:
                raise TrainingError(f'--gates-from {args.gates_from}: gate {n} learned {learned[n]} steps, '
                                    f'more than T_max = {cfg.t_max}')
            g.reset_steps(learned[n])

    # ---- optimisers: AdamW for the weights, SGD for the DTSS gates' lengths --
    # gates that train: the mask-loss categories (and, with train_unselected, all)
    trained_gates = [g for g in model.gates()
                     if g.enabled and (args.train_unselected or g.category in args.mask_categories)]
    trained_scores = [g.length for g in trained_gates]
    others = [p for n, p in model.named_parameters() if not is_gate_parameter(n)]
    if rf:   # timm's create_optimizer_v2 groups: no weight decay for biases and 1-D tensors
        gate_params = [p for n, p in model.named_parameters() if is_gate_parameter(n)]
        opt = torch.optim.AdamW(recipes.param_groups(model, args.weight_decay, leave_out=gate_params), lr=args.lr,
                                weight_decay=args.weight_decay)
    else:
        opt = torch.optim.AdamW(others, lr=args.lr, weight_decay=args.weight_decay)
    score_opt = torch.optim.SGD(trained_scores or [torch.zeros(1, requires_grad=True)],
                                lr=args.score_lr, momentum=0.9)
    steps_per_epoch = len(data.make_loader(train_set, args.batch_size, shuffle=False, seed=0))
    if world > 1:
        steps_per_epoch = math.ceil(len(train_set) / world / args.batch_size)
    if rf:   # full batches only (timm's loader; mixup pairs each batch with its reverse)
        steps_per_epoch = len(fit_set) // world // args.batch_size
        if steps_per_epoch == 0:
            raise TrainingError(f'--batch-size {args.batch_size} is more than the {len(fit_set) // world} training '
                                f'images per process; --recipe {args.recipe} trains on full batches only')
    for limit in (args.batches_per_epoch, args.max_batches):
        steps_per_epoch = min(steps_per_epoch, limit or steps_per_epoch)
    total_steps = args.epochs * steps_per_epoch

    def lr_factor(step):  # cosine 1 -> 0 in closed form; per epoch, a resume with more epochs stays exact
        if args.lr_schedule == 'epoch':
            return 0.5 * (1.0 + math.cos(math.pi * (step // steps_per_epoch) / args.epochs))
        return 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    if rf:   # timm's CosineLRScheduler, set at the start of every epoch (a function of the epoch alone)
        sched = recipes.scheduler(rf, opt, args.epochs)
        mixup_fn, loss_fn = recipes.mixup(rf, info.num_classes), recipes.train_loss(rf)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)  # stepped once per batch
        mixup_fn = None
        loss_fn = functools.partial(torch.nn.functional.cross_entropy, label_smoothing=args.label_smoothing)
    autocast = contextlib.nullcontext
    if args.amp != 'off':
        autocast = functools.partial(torch.autocast, device.type,
                                     dtype=torch.bfloat16 if args.amp == 'bf16' else torch.float16)
    scaler = torch.cuda.amp.GradScaler() if args.amp == 'fp16' else None
    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == 'cuda' else None)

    # ---- resume -------------------------------------------------------------
    ckpt_path = os.path.join(args.out, 'checkpoint.pt')
    log_path = os.path.join(args.out, 'log.jsonl')
    start_epoch = 0
    if args.resume:
        ckpt = load_checkpoint(ckpt_path)
        try:
            if ckpt['config'] != cfg.to_dict():
                raise TrainingError(f'{ckpt_path} was trained with a different model configuration')
            model.load_state_dict(ckpt['model'])
            opt.load_state_dict(ckpt['optimizer'])
            score_opt.load_state_dict(ckpt['score_optimizer'])
            if scaler is not None and 'scaler' in ckpt:
                scaler.load_state_dict(ckpt['scaler'])
            if not rf:   # timm's schedule is set from the epoch
                sched.load_state_dict({'lr_lambdas': [None] * len(opt.param_groups), **ckpt['scheduler']})
            start_epoch = int(ckpt['epoch'])
            set_rng_state(ckpt['rng'])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise TrainingError(f'cannot resume from {ckpt_path}: its content does not fit this run '
                                f'({type(e).__name__}: {first}); expected a checkpoint of the same '
                                'configuration written by this script') from None
        if start_epoch > args.epochs:
            raise TrainingError(f'cannot resume from {ckpt_path}: it is at epoch {start_epoch}, beyond '
                                f'--epochs {args.epochs}; pass --epochs {start_epoch} or more')
        if not rf:
            for g, base in zip(opt.param_groups, sched.base_lrs):  # schedule of this run's epochs
                g['lr'] = base * lr_factor(sched.last_epoch)
        if master:
            keep_log_until(log_path, start_epoch)
            print(f'resumed {ckpt_path} at epoch {start_epoch}')

    test_loader = data.make_loader(test_set, 256, shuffle=False, seed=args.seed)
    val_loader = data.make_loader(val_set, 256, shuffle=False, seed=args.seed) if val_set else None

    def recalibrate():
        """BatchNorm statistics re-estimated for the current weights, always on the same
        training images (a fresh loader with a fixed seed), on every rank alike."""
        if args.bn_calibration:
            calib_loader = data.make_loader(train_set, 256, shuffle=True, seed=12345)
            recalibrate_batchnorm(model, calib_loader, args.bn_calibration)

    def evaluate_all():
        """Test (and validation) accuracy and spike statistics."""
        ev = evaluate(model, test_loader, args.max_batches)
        if val_loader is not None:
            ev['val_accuracy'] = evaluate(model, val_loader, args.max_batches)['accuracy']
        return ev
    shift = (4 if args.dataset.startswith('cifar') else 0) if args.augment is None else args.augment
    flip = args.dataset in ('cifar10', 'cifar100') and shift > 0
    if master:
        print(f'{preset}: {sum(p.numel() for p in others):,} parameters, T_max={cfg.t_max}, '
              f'{"DTSS" if model.dtss else "fixed-T"}, {world} process(es) on {device}')

    # ---- training loop ----------------------------------------------------
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        sampler = None
        if world > 1:
            sampler = torch.utils.data.distributed.DistributedSampler(train_set, world, rank, shuffle=True, seed=args.seed)
            sampler.set_epoch(epoch)
        if rf:
            sampler = sampler if sampler is None else torch.utils.data.distributed.DistributedSampler(
                fit_set, world, rank, shuffle=True, seed=args.seed, drop_last=True)
            if sampler is not None:
                sampler.set_epoch(epoch)
            loader = data.make_loader(fit_set, args.batch_size, shuffle=True, seed=args.seed + epoch, sampler=sampler,
                                      drop_last=True)
            sched.step(epoch)
            if mixup_fn is not None:   # Spikformer's train_one_epoch: mixup off from mixup_off_epoch on
                mixup_fn.mixup_enabled = not (rf['mixup_off_epoch'] and epoch >= rf['mixup_off_epoch'])
        else:
            loader = data.make_loader(train_set, args.batch_size, shuffle=True, seed=args.seed + epoch, sampler=sampler)
        model.train()
        seen = correct = 0
        loss_sum = 0.0
        bar = tqdm(loader, desc=f'epoch {epoch + 1}/{args.epochs}', disable=not master, leave=False, mininterval=2.0)
        for i, (x, y) in enumerate(bar):
            if i >= steps_per_epoch:
                break
            # DTSS schedule (by training step): the scores keep their initial steps while the
            # network learns the task, train with the mask loss in [warm-up, freeze), then stay
            # frozen while the weights adapt to the chosen time steps. Weights: cosine schedule.
            step = epoch * steps_per_epoch + i
            train_scores = model.dtss and args.mask_warmup * total_steps <= step < args.freeze_scores * total_steps
            if not rf:
                x = data.random_shift(x, shift, flip=flip)
            x, y = x.to(device), y.to(device)
            target = y
            if mixup_fn is not None:   # soft targets, label smoothing included
                x, target = mixup_fn(x, y)
            with autocast():
                logits = ddp(x)
            ce = loss_fn(logits.float() if args.amp != 'off' else logits, target)
            loss = ce
            if train_scores:
                loss = loss + args.lambda_m * model.mask_loss(args.mask_categories, args.mask_weights).to(ce)
            if not torch.isfinite(loss):
                kept = (f'the last good checkpoint ({ckpt_path}, epoch {epoch}) is intact'
                        if epoch > 0 else 'no checkpoint had been written yet')
                raise TrainingError(f'loss became {loss.item()} at epoch {epoch + 1}, batch {i + 1}; '
                                    f'stopping: {kept}; lower --lr or check the data')
            opt.zero_grad(set_to_none=True)
            score_opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
                if train_scores:
                    score_opt.step()
            else:   # float16: the loss scaled, steps skipped where a gradient overflowed
                scaler.scale(loss).backward()
                scaler.step(opt)
                if train_scores and any(p.grad is not None for p in trained_scores):
                    scaler.step(score_opt)
                scaler.update()
            if train_scores:
                for g in trained_gates:   # projected gradient descent: lengths stay in [1, T_max]
                    g.project_()
            if not rf:
                sched.step()
            seen += int(y.numel())
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss) * int(y.numel())
            bar.set_postfix(loss=f'{loss_sum / seen:.3f}', acc=f'{correct / seen:.3f}', refresh=False,
                            steps=f'{model.time_step_report()["avg_steps"]:.2f}')
        if world > 1:  # DDP syncs buffers (BatchNorm statistics) only at the next forward: do it now
            for b in model.buffers():
                torch.distributed.broadcast(b, 0)
        # evaluation touches no training state (BatchNorm's running statistics serve evaluation only;
        # its loaders have their own generators), so how often it runs does not change the model
        evaluating = (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs
        if evaluating:
            recalibrate()
        if master:
            ev = evaluate_all() if evaluating else {}
            steps = ev or model.time_step_report()
            line = {'epoch': epoch + 1, 'train_loss': loss_sum / max(1, seen),
                    'train_acc': correct / max(1, seen), 'val_acc': ev.get('val_accuracy'),
                    'test_acc': ev.get('accuracy'),
                    'avg_steps': steps['avg_steps'], 'avg_steps_weighted': steps.get('avg_steps_weighted'),
                    'lr': opt.param_groups[0]['lr'] if rf else sched.get_last_lr()[0],
                    'time_s': round(time.time() - t0, 2)}
            if model.dtss:   # each gate's length (its steps: the length rounded half up)
                line['gate_lengths'] = {n: round(float(m.gate.length), 3) for n, m in model.gated_layers()}
            print(json.dumps(line), flush=True)
            with open(log_path, 'a') as f:
                f.write(json.dumps(line) + '\n')
            save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=opt.state_dict(),
                            score_optimizer=score_opt.state_dict(),
                            scheduler=sched.state_dict(), epoch=epoch + 1, rng=rng_state(),
                            config=cfg.to_dict(), dtss=model.dtss, args=vars_for_json(args),
                            **({'scaler': scaler.state_dict()} if scaler is not None else {}))

    # ---- final report and export -----------------------------------------
    metrics = {}
    if master:
        if start_epoch == args.epochs:  # resumed a finished run; otherwise the last epoch's evaluation stands
            recalibrate()
            ev = evaluate_all()
        metrics = {'preset': preset, 'dataset': args.dataset, 'dtss': model.dtss, 't_max': cfg.t_max,
                   'ann': args.ann,
                   'lambda_m': args.lambda_m, 'mask_categories': list(args.mask_categories),
                   'mask_weights': args.mask_weights,
                   'epochs': args.epochs, 'seed': args.seed, 'init_from': args.init_from, 'gates_from': args.gates_from,
                   'train_images': min(len(train_set), steps_per_epoch * args.batch_size * world),
                   'val_size': args.val_size, 'val_accuracy': ev.get('val_accuracy'),
                   'bn_calibration': args.bn_calibration,
                   'bn_calibration_mode': 'eval-sequential' if args.bn_calibration else 'running-average',
                   'test_accuracy': ev['accuracy'],
                   **{k: ev[k] for k in ('active_steps', 'avg_steps', 'avg_steps_weighted',
                                         'firing_rate', 'firing_rate_active', 'flops_per_step', 'neurons')}}
        if rf or device.type != 'cpu' or args.amp != 'off':   # (the lava-dtss recipe on CPU: as before)
            metrics.update(recipe=args.recipe, recipe_fields=rf, device=str(device), amp=args.amp)
        metrics['command'] = command
        metrics['recipe_fingerprint'] = recipe_fingerprint(args)
        if not args.no_export:
            from ..analysis.operations import OperationCounter
            from ..deploy import export   # its functions looked up at the call (tests replace them)
            model.cpu()   # the export reads the weights as numpy arrays; the deployed model runs on CPU
            net_path = os.path.join(args.out, 'model.net')
            export.export_hdf5(model, net_path, dataset=args.dataset, command=command)
            try:
                deployed = export.deployed_model(net_path)
                with OperationCounter(deployed, gating=True) as ops:  # what a gated Lava run executes
                    metrics['quantized_test_accuracy'] = evaluate(deployed, test_loader, args.max_batches)['accuracy']
                metrics['synops_per_sample'] = {n: v / ops.samples for n, v in ops.synops.items()}
                metrics['neuron_updates_per_sample'] = {n: v / ops.samples for n, v in ops.neuron_updates.items()}
                metrics['model'] = net_path
                write_json(os.path.join(args.out, 'model.json'), model_card(metrics))
            except BaseException:  # a model file never stays without its card
                os.unlink(net_path)
                raise
        write_json(os.path.join(args.out, 'metrics.json'), metrics)
        print(f'{"layer":22s} {"category":8s} {"steps":>5s} {"firing rate":>11s} {"(active steps)":>14s}')
        for layer, module in model.gated_layers():
            print(f'{layer:22s} {module.gate.category:8s} {ev["active_steps"][layer]:5d} '
                  f'{ev["firing_rate"][layer]:11.4f} {ev["firing_rate_active"][layer]:14.4f}')
        print(f'test accuracy {ev["accuracy"]:.4f}  average time steps {ev["avg_steps"]:.2f} '
              f'(weighted by synaptic operations {ev["avg_steps_weighted"]:.2f}) of T_max = {cfg.t_max}')
        if 'quantized_test_accuracy' in metrics:
            print(f'exported {metrics["model"]} (quantized accuracy {metrics["quantized_test_accuracy"]:.4f})')
    if world > 1:  # DDP keeps the replicas in step: check that every rank ends with the same model
        mine = torch.tensor(list(bytes.fromhex(state_digest(model))), dtype=torch.uint8)
        hashes = [torch.empty_like(mine) for _ in range(world)]
        torch.distributed.all_gather(hashes, mine)  # not all_gather_object: see below
        digests = [bytes(h.tolist()).hex() for h in hashes]
        if len(set(digests)) > 1:
            raise TrainingError(f'ranks ended with different models: {digests}')
        if master:
            print(f'ranks identical: {digests[0]}')
        # Destroy the process group while the gathered tensors are still referenced here: a Gloo
        # worker dropping the last reference needs the GIL, which ~ProcessGroupGloo holds while it
        # joins the workers (a deadlock at exit seen with all_gather_object's internal tensors).
        del ddp
        torch.distributed.destroy_process_group()
        del mine, hashes
    return metrics


# ---------------------------------------------------------------- the run folder
def prepare_out(args: TrainConfig):
    """Check the output folder before any work: a folder we can write, holding no
    earlier run unless ``resume`` (continue it) or ``overwrite`` (replace it); stale
    temporary files of a killed run are removed."""
    out = args.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise TrainingError(f'--out {out} is a file; expected a folder for the run')
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f'.write-test-{os.getpid()}')
        with open(probe, 'w') as f:
            f.write('ok')
        os.unlink(probe)
    except OSError as e:
        raise TrainingError(f'cannot write to --out {out}: {e.strerror or e}') from None
    lock_out(out)
    earlier = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if args.resume and 'checkpoint.pt' not in earlier:
        raise TrainingError(f'--resume: {out} holds no checkpoint.pt to continue')
    if earlier and not args.resume:
        if not args.overwrite:
            raise TrainingError(f'{out} holds an earlier run ({", ".join(earlier)}); pass --resume to '
                                'continue it, --overwrite to replace it, or another --out')
        for f in earlier:
            os.unlink(os.path.join(out, f))
    for f in os.listdir(out):  # temporary files of atomic writes interrupted by a kill
        if any(f.startswith('.' + name + '.') for name in RUN_FILES):
            os.unlink(os.path.join(out, f))


LOCK_FILE = '.lock'
_locks = {}     # folder -> open lock file of this process's run in it


def lock_out(out: str):
    """Take an exclusive lock on the run folder ``out`` (``flock`` of ``out/.lock``,
    released by the kernel when this process ends, however it ends), so that two
    runs never write into one folder; a second run is refused."""
    import fcntl
    key = os.path.realpath(out)
    old = _locks.pop(key, None)
    if old is not None:         # an earlier run of this process in the same folder
        old.close()
    f = open(os.path.join(out, LOCK_FILE), 'a')
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise TrainingError(f'--out {out} is in use by another training run (it holds the lock on '
                            f'{os.path.join(out, LOCK_FILE)}); wait for it to end or choose another --out') from None
    _locks[key] = f


def keep_log_until(log_path, epoch):
    """Drop log lines of epochs after ``epoch`` (written before a kill prevented their
    checkpoint), so a resumed log has one line per epoch."""
    if not os.path.exists(log_path):
        return
    with open(log_path) as f:
        lines = [line for line in f if line.strip()]
    kept = [line for line in lines if json.loads(line).get('epoch', 0) <= epoch]
    if len(kept) != len(lines):
        atomic_write(log_path, lambda f: f.writelines(kept), mode='w')


# TrainConfig fields that do not change the trained model: where the files go, how often it is evaluated
RUN_PLUMBING = ('data_dir', 'out', 'resume', 'overwrite', 'no_export', 'threads', 'eval_every', 'device',
                'recipe_applied')
# fields added after the first fingerprints, with the value that trains as before: they enter a
# fingerprint only when set otherwise, so that a card made before them still matches
LATER_FIELDS = {'recipe': 'lava-dtss', 'recipe_fields': {}, 'amp': 'off'}


def recipe_fingerprint(config: TrainConfig) -> str:
    """16 hex digits of SHA-256 over what makes a model: the resolved training
    options (every ``TrainConfig`` field but ``RUN_PLUMBING``), the model
    configuration they select and the DTSS gate's formulation. A card carries
    the fingerprint of its run; recomputing it from the card's command with
    today's code tells whether today's defaults would still train the same
    model (tests/test_presets.py does this for every shipped card)."""
    from ..model.dtss import GATE_PARAMETER
    args = resolve(config)
    preset = args.preset or DEFAULT_PRESET[args.dataset]
    cfg = get_config(preset, num_classes=data.DATASETS[args.dataset].num_classes,
                     t_max=args.fixed_t or args.t_max, **args.preset_fields)
    train = {k: v for k, v in vars_for_json(args).items() if k not in RUN_PLUMBING
             and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
    del train['mask_categories']   # mask_weights names them, with their weights
    del train['preset_fields']     # the model configuration below holds their effect
    train['init_from'] = train['init_from'] and os.path.basename(train['init_from'])
    train['gates_from'] = train['gates_from'] and os.path.basename(train['gates_from'])
    def same_numbers(v):   # 1 and 1.0 are one value (an option given as 1 or a default of 1.0)
        if isinstance(v, dict):
            return {k: same_numbers(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [same_numbers(x) for x in v]
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    text = json.dumps(same_numbers({'train': train, 'model': cfg.to_dict(), 'gate': GATE_PARAMETER}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_card(m):
    """The small JSON card shipped beside a model file."""
    keys = ('preset', 'dataset', 'dtss', 't_max', 'lambda_m', 'mask_categories', 'mask_weights', 'epochs', 'seed',
            'val_size',
            'val_accuracy', 'test_accuracy', 'quantized_test_accuracy', 'active_steps', 'avg_steps',
            'avg_steps_weighted', 'synops_per_sample', 'neuron_updates_per_sample', 'command', 'recipe_fingerprint')
    card = {k: m[k] for k in keys}
    card['test_accuracy_note'] = ('test_accuracy: float model; quantized_test_accuracy: the exported '
                                  'fixed-point model (what Lava runs), on the full test split')
    return card


def state_digest(model):
    """SHA-256 over the names and raw bytes of ``model``'s state-dict tensors."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def vars_for_json(args: TrainConfig) -> dict:
    """The options as a checkpoint stores them (tuples as lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(args).items()}
