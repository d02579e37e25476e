"""Training recipes: ``lava-dtss`` (this project's own, :mod:`.loop`'s defaults)
and Spikformer's published ones (ZK-Zhou/spikformer, ``cifar10/cifar10.yml`` and
``imagenet/imagenet.yml`` with the defaults of their ``train.py``), built from
timm's own components (pinned in pyproject.toml): ``timm.data.create_transform``
(RandAugment, random erasing), ``timm.data.Mixup``, ``SoftTargetCrossEntropy`` /
``LabelSmoothingCrossEntropy``, ``timm.scheduler.CosineLRScheduler`` and
``timm.optim.param_groups_weight_decay``.

A recipe is a dict of fields. Those named in :data:`SHARED` are options of
:class:`~lava_dtss.training.loop.TrainConfig` (an explicit option overrides the
recipe); those in :data:`OVERRIDABLE` can be changed with ``--recipe-config
FIELD=VALUE``; the rest are fixed. ``SOURCE`` says where each value comes from;
docs/training.md compares every field of ``cifar10.yml`` with this.

Tensors: images ``[C, H, W]`` float32 in ``[0, 1]`` (as :mod:`.data` yields them
and the exported model expects), batches ``[N, C, H, W]``.
"""
from __future__ import annotations

import json
import math

import torch

DEFAULT_RECIPE = 'lava-dtss'

# Spikformer's CIFAR RandAugment (cifar10/aa_snn.py, _RAND_INCREASING_TRANSFORMS): five of
# timm's fifteen operations; ImageNet (imagenet/train.py) uses timm's own list (None).
SPIKFORMER_CIFAR_OPS = ('Equalize', 'Rotate', 'ShearX', 'TranslateXRel', 'TranslateYRel')

_CIFAR10 = {
    # fields shared with TrainConfig (an explicit option wins)
    'dataset': 'cifar10',            # cifar10.yml dataset: torch/cifar10
    'epochs': 310,                   # epochs: 300 + cooldown_epochs: 10 (timm's create_scheduler runs both)
    'batch_size': 128,               # batch_size: 128 (one GPU)
    'lr': 5e-4,                      # lr: 5e-4
    'weight_decay': 6e-2,            # weight_decay: 6e-2
    # schedule: timm CosineLRScheduler, per epoch (sched: cosine)
    'warmup_epochs': 20,             # warmup_epochs: 20
    'warmup_lr': 1e-5,               # warmup_lr: 0.00001
    'min_lr': 1e-5,                  # min_lr: 1e-5
    'cooldown_epochs': 10,           # cooldown_epochs: 10 (at min_lr after the cosine)
    # data: timm create_transform (train), bicubic, crop of the whole image
    'aa': 'rand-m9-n1-mstd0.4-inc1',  # aa
    'ra_ops': SPIKFORMER_CIFAR_OPS,  # cifar10/transforms_factory.py uses aa_snn.rand_augment_transform
    'hflip': 0.5,                    # train.py default --hflip 0.5
    'scale': (1.0, 1.0),             # scale: [1.0, 1.0]
    'ratio': (1.0, 1.0),             # ratio: [1.0, 1.0]
    'color_jitter': 0.0,             # color_jitter: 0. (timm disables it with aa anyway)
    'interpolation': 'bicubic',      # interpolation / train_interpolation: bicubic
    'crop_pct': 1.0,                 # crop_pct: 1.0 (evaluation: the whole 32x32 image)
    'mean': (0.4914, 0.4822, 0.4465),  # mean (RandAugment's fill and random erasing's value)
    'std': (0.2470, 0.2435, 0.2616),   # std
    'reprob': 0.25,                  # reprob: 0.25
    'remode': 'const',               # remode: const
    'recount': 1,                    # train.py default --recount 1
    # mixup / cutmix: timm Mixup with its label smoothing, SoftTargetCrossEntropy
    'mixup': 0.5,                    # mixup: 0.5
    'cutmix': 0.0,                   # cutmix: 0.0
    'mixup_prob': 1.0,               # mixup_prob: 1.0
    'mixup_switch_prob': 0.5,        # mixup_switch_prob: 0.5
    'mixup_mode': 'batch',           # mixup_mode: batch
    'mixup_off_epoch': 200,          # mixup_off_epoch: 200 (0: never)
    'smoothing': 0.1,                # smoothing: 0.1
    'amp': 'fp16',                   # amp: True (native float16 autocast + GradScaler), on CUDA
}

RECIPES = {
    DEFAULT_RECIPE: None,   # the training loop's own recipe (random shift and flip, AdamW, cosine)
    'spikformer-cifar10': _CIFAR10,
    # no cifar100.yml in the repository: the CIFAR-10 recipe with CIFAR-100's mean and std
    'spikformer-cifar100': {**_CIFAR10, 'dataset': 'cifar100',
                            'mean': (0.5071, 0.4865, 0.4409), 'std': (0.2673, 0.2564, 0.2762)},
    'spikformer-imagenet': {
        **_CIFAR10,
        'dataset': 'imagenet',       # imagenet.yml dataset: imagenet
        'batch_size': 24,            # batch_size: 24 per process (8 processes in the README's command)
        'weight_decay': 5e-2,        # weight_decay: 5e-2
        'warmup_lr': 1e-6,           # warmup_lr: 0.000001
        'aa': 'rand-m9-mstd0.5-inc1',  # aa (n: timm's default 2)
        'ra_ops': None,              # imagenet/train.py: timm's create_loader, timm's operations
        'ratio': (3 / 4, 4 / 3),     # imagenet/train.py default --ratio
        'color_jitter': 0.4,         # train.py default (timm disables it with aa)
        'mean': (0.485, 0.456, 0.406),
        'std': (0.229, 0.224, 0.225),
        'mixup': 0.8,                # mixup: 0.8
        'cutmix': 1.0,               # cutmix: 1.0
        'mixup_off_epoch': 0,        # mixup_off_epoch: 0 (never)
    },
}
SOURCE = {'spikformer-cifar10': 'ZK-Zhou/spikformer cifar10/cifar10.yml (+ cifar10/train.py defaults)',
          'spikformer-cifar100': 'ZK-Zhou/spikformer cifar10/cifar10.yml with CIFAR-100 mean/std',
          'spikformer-imagenet': 'ZK-Zhou/spikformer imagenet/imagenet.yml (+ imagenet/train.py defaults)'}

SHARED = ('dataset', 'epochs', 'batch_size', 'lr', 'weight_decay')
OVERRIDABLE = ('warmup_epochs', 'warmup_lr', 'min_lr', 'cooldown_epochs', 'aa', 'hflip', 'reprob',
               'mixup', 'cutmix', 'mixup_prob', 'mixup_switch_prob', 'mixup_off_epoch', 'smoothing')
_WHOLE = ('warmup_epochs', 'cooldown_epochs', 'mixup_off_epoch')
_FRACTION = ('hflip', 'reprob', 'mixup_prob', 'mixup_switch_prob', 'smoothing')


def resolve_fields(name: str, items) -> dict:
    """The fields of recipe ``name`` with ``--recipe-config`` ``items`` applied
    ('FIELD=VALUE' strings, VALUE in JSON or a bare word for ``aa``, or a dict);
    ``{}`` for ``lava-dtss`` (which takes none). ``ValueError`` naming the item."""
    if name not in RECIPES:
        raise ValueError(f'--recipe: invalid choice {name!r} (choose from {", ".join(map(repr, RECIPES))})')
    pairs = []
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        for item in items or ():
            field, sep, value = str(item).partition('=')
            if not sep:
                raise ValueError(f'--recipe-config {item!r}: expected FIELD=VALUE')
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass   # a bare word: aa's policy string
            pairs.append((field.strip(), value))
    if RECIPES[name] is None:
        if pairs:
            raise ValueError(f'--recipe-config applies to the spikformer-* recipes; --recipe {name} has its '
                             'own options (--augment, --lr-schedule, ...)')
        return {}
    fields = dict(RECIPES[name])
    for field, value in pairs:
        if field not in OVERRIDABLE:
            if field in fields and isinstance(items, dict) and value == fields[field]:
                continue   # an already resolved recipe passed again
            raise ValueError(f'--recipe-config: unknown or fixed field {field!r}; choose from {", ".join(OVERRIDABLE)}'
                             + (f' (--{field.replace("_", "-")} is an option of its own)' if field in SHARED else ''))
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if field == 'aa':
            ok = value is None or (isinstance(value, str) and value.startswith('rand-'))
            what = "a RandAugment policy such as rand-m9-n1-mstd0.4-inc1, or null (none)"
        elif field in _WHOLE:
            ok = number and float(value).is_integer() and value >= 0
            what = 'a whole number >= 0'
            value = int(value) if ok else value
        elif field in _FRACTION:
            ok = number and 0 <= value <= 1
            what = 'a number in 0..1'
        else:
            ok = number and math.isfinite(value) and value >= 0
            what = 'a finite number >= 0'
        if not ok:
            raise ValueError(f'--recipe-config {field}={json.dumps(value)}: expected {what}')
        fields[field] = value if field == 'aa' or field in _WHOLE else float(value)
    return fields


def mixup_active(r: dict) -> bool:
    return r['mixup'] > 0 or r['cutmix'] > 0


# ---------------------------------------------------------------- data
class _Clamp01:
    """Clip a tensor to ``[0, 1]`` (the un-normalised image; rounding only)."""

    def __call__(self, x):
        return x.clamp_(0.0, 1.0)

    def __repr__(self):
        return 'Clamp01()'


def train_transform(r: dict, image_size: int):
    """timm's training transform for PIL images -> ``[3, H, W]`` float32 in ``[0, 1]``:
    ``create_transform(is_training=True)`` with the recipe's crop, flip, RandAugment
    (restricted to ``r['ra_ops']`` where set, as Spikformer's CIFAR code does) and
    random erasing, all in Spikformer's normalised space (so RandAugment fills and
    erased patches take the data set's mean colour), then mapped back to ``[0, 1]``."""
    from timm.data import create_transform
    from torchvision import transforms
    primary, secondary, final = create_transform(
        image_size, is_training=True, scale=tuple(r['scale']), ratio=tuple(r['ratio']), hflip=r['hflip'],
        color_jitter=r['color_jitter'], auto_augment=r['aa'], interpolation=r['interpolation'],
        mean=tuple(r['mean']), std=tuple(r['std']), re_prob=r['reprob'], re_mode=r['remode'],
        re_count=r['recount'], separate=True)
    if r['aa'] and r['ra_ops']:
        ra = secondary.transforms[0]    # timm's RandAugment: keep the recipe's operations
        ra.ops = [op for op in ra.ops if op.name in r['ra_ops']]
        if sorted(op.name for op in ra.ops) != sorted(r['ra_ops']):
            raise ValueError(f'aa {r["aa"]!r}: timm has no operations {sorted(set(r["ra_ops"]) - {op.name for op in ra.ops})}')
    mean, std = torch.tensor(r['mean']), torch.tensor(r['std'])
    back = transforms.Normalize(mean=(-mean / std).tolist(), std=(1 / std).tolist())   # x * std + mean
    return transforms.Compose(list(primary.transforms) + list(secondary.transforms) + list(final.transforms)
                              + [back, _Clamp01()])


def eval_transform(r: dict, image_size: int):
    """timm's evaluation transform (resize by ``crop_pct``, centre crop, bicubic) for
    PIL images -> ``[3, H, W]`` in ``[0, 1]`` (ImageNet; for CIFAR at 32 pixels with
    ``crop_pct`` 1 it is the identity, and the plain test set is used)."""
    from timm.data import create_transform
    return create_transform(image_size, is_training=False, interpolation=r['interpolation'],
                            crop_pct=r['crop_pct'], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class AugmentedDataset(torch.utils.data.Dataset):
    """``base``'s items ``(image [C, H, W] float32 in [0, 1], label)`` passed through
    a PIL ``transform`` (the pixels are exact 8-bit values, as CIFAR stores them)."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        from PIL import Image
        x, y = self.base[index]
        if isinstance(x, torch.Tensor):
            x = Image.fromarray(x.mul(255).round_().to(torch.uint8).permute(1, 2, 0).numpy())
        return self.transform(x), y


# ---------------------------------------------------------------- loss, mixup, schedule, optimiser
def mixup(r: dict, num_classes: int):
    """timm's ``Mixup`` (its targets carry the label smoothing), or None without mixup/cutmix."""
    if not mixup_active(r):
        return None
    from timm.data import Mixup
    return Mixup(mixup_alpha=r['mixup'], cutmix_alpha=r['cutmix'], prob=r['mixup_prob'],
                 switch_prob=r['mixup_switch_prob'], mode=r['mixup_mode'], label_smoothing=r['smoothing'],
                 num_classes=num_classes)


def train_loss(r: dict):
    """The training loss of Spikformer's train.py: soft-target cross-entropy after
    mixup, label-smoothing cross-entropy without it (timm's losses)."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    if mixup_active(r):
        return SoftTargetCrossEntropy()
    if r['smoothing']:
        return LabelSmoothingCrossEntropy(smoothing=r['smoothing'])
    return torch.nn.CrossEntropyLoss()


def scheduler(r: dict, optimizer, epochs: int):
    """timm's ``CosineLRScheduler`` per epoch: ``warmup_epochs`` linear from
    ``warmup_lr``, cosine to ``min_lr`` over ``epochs - cooldown_epochs`` epochs,
    then ``min_lr`` (timm's ``create_scheduler``). Call ``step(epoch)`` at the start
    of each epoch (Spikformer's ``step(epoch + 1)`` after it)."""
    from timm.scheduler import CosineLRScheduler
    return CosineLRScheduler(optimizer, t_initial=epochs - r['cooldown_epochs'], lr_min=r['min_lr'],
                             warmup_t=r['warmup_epochs'], warmup_lr_init=r['warmup_lr'], cycle_limit=1,
                             t_in_epochs=True)


def param_groups(model: torch.nn.Module, weight_decay: float, leave_out=()):
    """timm's ``param_groups_weight_decay`` (no decay for biases and 1-D tensors:
    ``create_optimizer_v2``'s default) for ``model``'s parameters except ``leave_out``
    (the DTSS gates, which have their own optimiser)."""
    from timm.optim import param_groups_weight_decay
    skip = {id(p) for p in leave_out}
    groups = param_groups_weight_decay(model, weight_decay)
    for g in groups:
        g['params'] = [p for p in g['params'] if id(p) not in skip]
    return [g for g in groups if g['params']]
