#!/usr/bin/env python
"""Train a DTSS spiking ViT (SLAYER blocks), then export it to NetX HDF5.

    python scripts/train_slayer.py                     # tiny preset on digits
    python scripts/train_slayer.py --dataset fashion-mnist --preset fmnist
    python scripts/train_slayer.py --fixed-t 4         # fixed-T baseline
    torchrun --nproc_per_node 2 scripts/train_slayer.py ...   # multi-process

Loss: cross-entropy + lambda_m * mask loss over the selected layer categories.
Writes to --out: log.jsonl (one JSON line per epoch), checkpoint.pt (atomic,
every epoch; --resume continues it exactly), metrics.json, model.net (HDF5).
"""
import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from lava_dtss import data  # noqa: E402
from lava_dtss.dtss import CATEGORIES, DEFAULT_LOSS_CATEGORIES  # noqa: E402
from lava_dtss.model import PRESETS, ViTConfig, SpikingViT, get_config  # noqa: E402
from lava_dtss.training import (TrainingError, evaluate, init_distributed,  # noqa: E402
                                load_checkpoint, rng_state, save_checkpoint,
                                set_rng_state, write_json)

DEFAULT_PRESET = {'digits': 'tiny', 'fashion-mnist': 'fmnist', 'cifar10': 'spikformer-4-384',
                  'cifar100': 'spikformer-4-384', 'imagenet': 'spikformer-8-768'}


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
    p.add_argument('--lambda-m', type=float, default=0.5, help='mask-loss weight lambda_m')
    p.add_argument('--mask-categories', default=','.join(DEFAULT_LOSS_CATEGORIES),
                   help=f'comma-separated layer categories in the mask loss, from {",".join(CATEGORIES)}')
    p.add_argument('--epochs', type=int, default=60)
    p.add_argument('--batch-size', type=int, default=64, help='per process')
    p.add_argument('--lr', type=float, default=3e-3, help='peak learning rate (AdamW, cosine schedule)')
    p.add_argument('--score-lr', type=float, default=0.05, help='learning rate of the DTSS scores')
    p.add_argument('--freeze-scores', type=float, default=0.5, metavar='FRACTION',
                   help='stop training the DTSS scores after this fraction of the epochs, so the '
                        'weights adapt to the final time steps (default 0.5; 1 = never freeze)')
    p.add_argument('--weight-decay', type=float, default=0.01)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='runs/default', help='output folder')
    p.add_argument('--resume', action='store_true', help='continue from OUT/checkpoint.pt')
    p.add_argument('--no-export', action='store_true', help='skip the NetX HDF5 export')
    p.add_argument('--max-batches', type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cats = tuple(c for c in args.mask_categories.split(',') if c)
    bad = [c for c in cats if c not in CATEGORIES]
    if bad:
        p.error(f'--mask-categories: unknown {bad}; choose from {",".join(CATEGORIES)}')
    args.mask_categories = cats
    for name in ('epochs', 'batch_size'):
        if getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")} must be >= 1')
    if args.fixed_t is not None and args.fixed_t < 1:
        p.error('--fixed-t must be >= 1')
    if args.t_max is not None and args.t_max < 1:
        p.error('--t-max must be >= 1')
    if not math.isfinite(args.lambda_m) or args.lambda_m < 0:
        p.error('--lambda-m must be a finite number >= 0')
    return args


def main(argv=None):
    args = parse_args(argv)
    rank, world, device = init_distributed()
    master = rank == 0
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    # ---- data -------------------------------------------------------------
    info = data.DATASETS[args.dataset]
    train_set = data.load_dataset(args.dataset, 'train', args.data_dir, seed=args.seed)
    test_set = data.load_dataset(args.dataset, 'test', args.data_dir, seed=args.seed)

    # ---- model ------------------------------------------------------------
    preset = args.preset or DEFAULT_PRESET[args.dataset]
    t_max = args.fixed_t or args.t_max
    cfg = get_config(preset, num_classes=info.num_classes, t_max=t_max)
    if (cfg.in_channels, cfg.image_size, cfg.image_size) != info.image_shape:
        raise SystemExit(f'error: preset {preset} expects images {cfg.in_channels}x{cfg.image_size}x'
                         f'{cfg.image_size}, dataset {args.dataset} has {info.image_shape}')
    model = SpikingViT(cfg, dtss=args.fixed_t is None).to(device)
    scores = [p for n, p in model.named_parameters() if n.endswith('gate.scores')]
    others = [p for n, p in model.named_parameters() if not n.endswith('gate.scores')]
    opt = torch.optim.AdamW([{'params': others, 'lr': args.lr, 'weight_decay': args.weight_decay},
                             {'params': scores, 'lr': args.score_lr, 'weight_decay': 0.0}])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == 'cuda' else None)

    ckpt_path = os.path.join(args.out, 'checkpoint.pt')
    log_path = os.path.join(args.out, 'log.jsonl')
    start_epoch = 0
    if master:
        os.makedirs(args.out, exist_ok=True)
        if not args.resume and os.path.exists(log_path):
            os.unlink(log_path)
    if args.resume:
        ckpt = load_checkpoint(ckpt_path)
        if ckpt['config'] != cfg.to_dict():
            raise TrainingError(f'{ckpt_path} was trained with a different model configuration')
        model.load_state_dict(ckpt['model'])
        opt.load_state_dict(ckpt['optimizer'])
        sched.load_state_dict(ckpt['scheduler'])
        start_epoch = ckpt['epoch']
        set_rng_state(ckpt['rng'])
        if master:
            print(f'resumed {ckpt_path} at epoch {start_epoch}')

    test_loader = data.make_loader(test_set, 256, shuffle=False, seed=args.seed)
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
        loader = data.make_loader(train_set, args.batch_size, shuffle=True, seed=args.seed + epoch, sampler=sampler)
        model.train()
        train_scores = model.dtss and epoch < args.freeze_scores * args.epochs
        if not train_scores:  # frozen: no update (lr 0 stays 0 under the cosine schedule)
            opt.param_groups[1]['lr'] = 0.0
        seen = correct = 0
        loss_sum = 0.0
        bar = tqdm(loader, desc=f'epoch {epoch + 1}/{args.epochs}', disable=not master, leave=False, mininterval=2.0)
        for i, (x, y) in enumerate(bar):
            if args.max_batches is not None and i >= args.max_batches:
                break
            x, y = x.to(device), y.to(device)
            logits = ddp(x)
            ce = torch.nn.functional.cross_entropy(logits, y)
            loss = ce
            if train_scores:
                loss = loss + args.lambda_m * model.mask_loss(args.mask_categories).to(ce)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f'loss became {loss.item()} at epoch {epoch + 1}, batch {i + 1}; stopping. '
                    f'The last good checkpoint ({ckpt_path}, epoch {start_epoch if epoch == start_epoch else epoch}) '
                    'is intact; lower --lr or check the data')
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += int(y.numel())
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss) * int(y.numel())
            bar.set_postfix(loss=f'{loss_sum / seen:.3f}', acc=f'{correct / seen:.3f}', refresh=False,
                            steps=f'{model.time_step_report()["avg_steps"]:.2f}')
        sched.step()
        if master:
            ev = evaluate(model, test_loader, args.max_batches)
            line = {'epoch': epoch + 1, 'train_loss': loss_sum / max(1, seen),
                    'train_acc': correct / max(1, seen), 'test_acc': ev['accuracy'],
                    'avg_steps': ev['avg_steps'], 'avg_steps_weighted': ev['avg_steps_weighted'],
                    'lr': sched.get_last_lr()[0], 'time_s': round(time.time() - t0, 2)}
            print(json_line(line), flush=True)
            with open(log_path, 'a') as f:
                f.write(json_line(line) + '\n')
            save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=opt.state_dict(),
                            scheduler=sched.state_dict(), epoch=epoch + 1, rng=rng_state(),
                            config=cfg.to_dict(), dtss=model.dtss, args=vars_for_json(args))

    # ---- final report and export -----------------------------------------
    if master:
        ev = evaluate(model, test_loader, args.max_batches)
        metrics = {'preset': preset, 'dataset': args.dataset, 'dtss': model.dtss, 't_max': cfg.t_max,
                   'lambda_m': args.lambda_m, 'mask_categories': list(args.mask_categories),
                   'epochs': args.epochs, 'seed': args.seed, 'test_accuracy': ev['accuracy'],
                   **{k: ev[k] for k in ('active_steps', 'avg_steps', 'avg_steps_weighted',
                                         'firing_rate', 'firing_rate_active', 'flops_per_step')}}
        if not args.no_export:
            from lava_dtss.export import export_hdf5, deployed_accuracy
            net_path = os.path.join(args.out, 'model.net')
            export_hdf5(model, net_path, dataset=args.dataset, command=' '.join(['python'] + sys.argv))
            metrics['quantized_test_accuracy'] = deployed_accuracy(net_path, test_loader)
            metrics['model'] = net_path
        write_json(os.path.join(args.out, 'metrics.json'), metrics)
        print(f'test accuracy {ev["accuracy"]:.4f}  average time steps {ev["avg_steps"]:.2f} '
              f'(weighted {ev["avg_steps_weighted"]:.2f})  active steps {ev["active_steps"]}')
        if 'quantized_test_accuracy' in metrics:
            print(f'exported {metrics["model"]} (quantized accuracy {metrics["quantized_test_accuracy"]:.4f})')
    if world > 1:
        torch.distributed.destroy_process_group()


def json_line(obj):
    import json
    return json.dumps(obj)


def vars_for_json(args):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}


if __name__ == '__main__':
    try:
        main()
    except (TrainingError, data.DatasetError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print('interrupted; the last checkpoint is intact', file=sys.stderr)
        sys.exit(130)
