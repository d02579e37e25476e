#!/usr/bin/env python
"""Train a DTSS spiking ViT (SLAYER blocks), then export it to NetX HDF5.

    python scripts/train_slayer.py                     # tiny preset on digits
    python scripts/train_slayer.py --dataset fashion-mnist --preset fmnist
    python scripts/train_slayer.py --fixed-t 4         # fixed-T baseline
    torchrun --nproc_per_node 2 scripts/train_slayer.py ...   # multi-process

Loss: cross-entropy + lambda_m * mask loss over the selected layer categories.
Writes to --out: log.jsonl (one JSON line per epoch), checkpoint.pt (atomic,
every epoch; --resume continues it exactly), metrics.json, model.net (HDF5).
With several processes, the ranks compare SHA-256 hashes of their final model
state at the end and print 'ranks identical: <hash>' (error if they differ).
"""
import argparse
import hashlib
import json
import math
import random
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from lava_dtss.training import data  # noqa: E402
from lava_dtss.model.dtss import CATEGORIES, DEFAULT_LOSS_CATEGORIES, DTSSGate  # noqa: E402
from lava_dtss.model import PRESETS, SpikingViT, get_config  # noqa: E402
from lava_dtss.training import (TrainingError, evaluate, init_distributed,  # noqa: E402
                                atomic_write, init_weights, learned_gate_steps, load_checkpoint,
                                recalibrate_batchnorm,
                                rng_state, save_checkpoint, set_rng_state, write_json)

# qkv, attn and mlp in the mask loss (the paper's default), qkv with a quarter of the
# weight: on digits the full weight drove q, k and v to 1 step and cost 5-7% accuracy
# (seeds 1, 2: 90.6%, 91.1%), a quarter keeps 98% at 3.4 average steps.
DEFAULT_MASK_CATEGORIES = 'qkv=0.25,' + ','.join(c for c in DEFAULT_LOSS_CATEGORIES if c != 'qkv')
MAX_T = 256        # time steps a run may ask for (memory grows linearly with T)
MAX_SHIFT = 32     # largest augmentation shift, pixels
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
    p.add_argument('--ann', action='store_true',
                   help='train the ANN twin instead: the same architecture with a real-valued activation '
                        '(clamp(x / threshold, 0, 1)) in place of every LIF, one time step, no DTSS and no '
                        'export (the reference of the sensitivity analysis and the energy comparison)')
    p.add_argument('--lambda-m', type=float, default=2.0, help='mask-loss weight lambda_m (default 2)')
    p.add_argument('--mask-categories', default=DEFAULT_MASK_CATEGORIES,
                   help=f'comma-separated layer categories in the mask loss, from {",".join(CATEGORIES)}; '
                        'CAT=W gives a category its own weight relative to lambda_m (default: %(default)s)')
    p.add_argument('--epochs', type=int, default=60)
    p.add_argument('--batch-size', type=int, default=64, help='per process')
    p.add_argument('--lr', type=float, default=3e-3, help='peak learning rate (AdamW, cosine schedule)')
    p.add_argument('--lr-schedule', choices=('epoch', 'step'), default='epoch',
                   help='cosine steps once per epoch (default: a --resume with more --epochs continues '
                        'exactly) or once per batch (smooth decay within short runs, e.g. fine-tuning)')
    p.add_argument('--score-lr', type=float, default=0.05,
                   help='learning rate of the DTSS scores (SGD, momentum 0.9: updates follow the size '
                        'of the task and mask-loss gradients, layer by layer)')
    p.add_argument('--mask-warmup', type=float, default=0.25, metavar='FRACTION',
                   help='keep the DTSS scores at their initial steps and leave out the mask loss for this '
                        'fraction of the training steps, while the network learns the task (default 0.25)')
    p.add_argument('--train-unselected', action='store_true',
                   help='also train the scores of layers outside --mask-categories (by the task loss '
                        'alone); by default they keep T_max/2 steps')
    p.add_argument('--freeze-scores', type=float, default=0.6, metavar='FRACTION',
                   help='stop training the DTSS scores after this fraction of the training steps, so the '
                        'weights adapt to the final time steps (default 0.6; 1 = never freeze)')
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
    p.add_argument('--weight-decay', type=float, default=0.1, help='AdamW weight decay of the weights')
    p.add_argument('--augment', type=int, default=None, metavar='PIXELS',
                   help='random-shift augmentation of up to PIXELS (default: 4 with horizontal flips '
                        'for cifar10/100, 0 otherwise; imagenet uses random resized crops)')
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
    args = p.parse_args(argv)
    weights = {}
    for item in (c for c in args.mask_categories.split(',') if c):
        name, _, w = item.partition('=')
        if name not in CATEGORIES:
            p.error(f'--mask-categories: unknown {name!r}; choose from {",".join(CATEGORIES)}')
        try:
            weights[name] = float(w) if w else 1.0
        except ValueError:
            p.error(f'--mask-categories: weight of {name} must be a number, got {w!r}')
        if not math.isfinite(weights[name]) or weights[name] < 0:
            p.error(f'--mask-categories: weight of {name} must be a finite number >= 0')
    args.mask_categories = tuple(weights)
    args.mask_weights = weights
    init = {}
    for item in (args.init_steps.split(',') if args.init_steps is not None else ()):
        name, _, k = item.rpartition('=')
        if name and name not in CATEGORIES:
            p.error(f'--init-steps: unknown category {name!r}; choose from {",".join(CATEGORIES)}')
        if not k.strip().isdigit() or int(k) < 1:
            p.error(f'--init-steps: expected K or CAT=K,... with whole numbers K >= 1, got {args.init_steps!r}')
        init[name or '*'] = int(k)
    args.init_steps = init or None
    for name in ('epochs', 'batch_size', 'batches_per_epoch'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")} must be >= 1')
    if args.ann and args.fixed_t not in (None, 1):
        p.error('--ann runs one time step: leave out --fixed-t')
    if args.ann:
        args.fixed_t, args.no_export = 1, True
    for name in ('fixed_t', 't_max'):
        v = getattr(args, name)
        if v is not None and not 1 <= v <= MAX_T:
            p.error(f'--{name.replace("_", "-")} must be in 1..{MAX_T} time steps, got {v}')
    if args.fixed_t is not None and args.t_max is not None and args.t_max != args.fixed_t and not args.ann:
        p.error(f'--fixed-t {args.fixed_t} sets T_max = {args.fixed_t}; leave out --t-max {args.t_max}')
    if args.gates_from and (args.fixed_t is not None or args.ann):
        p.error('--gates-from sets DTSS gates: leave out --fixed-t and --ann')
    if args.gates_from and args.init_steps:
        p.error('--gates-from sets every gate: leave out --init-steps')
    if not 0 <= args.seed < 2**32:
        p.error(f'--seed must be in 0..{2**32 - 1} (numpy\'s seed range), got {args.seed}')
    if args.threads is not None and args.threads < 1:
        p.error('--threads must be >= 1')
    if args.augment is not None and not 0 <= args.augment <= MAX_SHIFT:
        p.error(f'--augment must be in 0..{MAX_SHIFT} pixels, got {args.augment}')
    for name in ('mask_warmup', 'freeze_scores'):
        v = getattr(args, name)
        if not (math.isfinite(v) and 0 <= v <= 1):
            p.error(f'--{name.replace("_", "-")} is a fraction of the training steps: 0..1, got {v}')
    if args.mask_warmup > args.freeze_scores:
        p.error(f'--mask-warmup {args.mask_warmup} is after --freeze-scores {args.freeze_scores}: '
                'the scores would never train')
    if not (math.isfinite(args.lr) and args.lr > 0):
        p.error(f'--lr must be a finite number > 0, got {args.lr}')
    for name in ('score_lr', 'weight_decay'):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) >= 0):
            p.error(f'--{name.replace("_", "-")} must be a finite number >= 0')
    if args.resume and args.overwrite:
        p.error('--resume and --overwrite exclude each other')
    for name in ('val_size', 'bn_calibration'):
        if getattr(args, name) < 0:
            p.error(f'--{name.replace("_", "-")} must be >= 0')
    if not math.isfinite(args.lambda_m) or args.lambda_m < 0:
        p.error('--lambda-m must be a finite number >= 0')
    return args


def main(argv=None):
    args = parse_args(argv)
    rank, world, device = init_distributed()
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
    train_set = data.load_dataset(args.dataset, 'train', args.data_dir)  # fixed split: the same test set for every --seed
    test_set = data.load_dataset(args.dataset, 'test', args.data_dir)
    val_set = None
    if args.val_size:
        train_set, val_set = data.holdout_split(train_set, args.val_size)
    if master:
        prepare_out(args)

    # ---- model ------------------------------------------------------------
    t_max = args.fixed_t or args.t_max
    cfg = get_config(preset, num_classes=info.num_classes, t_max=t_max)
    if (cfg.in_channels, cfg.image_size, cfg.image_size) != info.image_shape:
        raise SystemExit(f'error: preset {preset} expects images {cfg.in_channels}x{cfg.image_size}x'
                         f'{cfg.image_size}, dataset {args.dataset} has {info.image_shape}')
    model = SpikingViT(cfg, dtss=args.fixed_t is None, neuron_impl='ann' if args.ann else 'fast').to(device)
    if args.init_from and not args.resume:
        init_weights(model, args.init_from)
    if args.init_steps or args.init_from:
        default = cfg.t_max if args.init_from else max(1, cfg.t_max // 2)
        for g in model.gates():
            k = (args.init_steps or {}).get(g.category, (args.init_steps or {}).get('*', default))
            if k > cfg.t_max:
                raise SystemExit(f'error: --init-steps {k} exceeds T_max = {cfg.t_max}')
            g.reset_scores(k)
    if args.gates_from and not args.resume:
        learned = learned_gate_steps(args.gates_from)
        mine = {n: g for n, g in model.named_modules() if isinstance(g, DTSSGate)}
        if set(learned) != set(mine):
            raise SystemExit(f'error: --gates-from {args.gates_from}: its gates ({len(learned)}) are not those of '
                             f'preset {preset} ({len(mine)}); expected a DTSS run of the same preset')
        for n, g in mine.items():
            if learned[n] > cfg.t_max:
                raise SystemExit(f'error: --gates-from {args.gates_from}: gate {n} learned {learned[n]} steps, '
                                 f'more than T_max = {cfg.t_max}')
            g.reset_scores(learned[n])
    # scores that train: the mask-loss categories (and, with --train-unselected, all)
    trained_scores = [g.scores for g in model.gates()
                      if g.enabled and (args.train_unselected or g.category in args.mask_categories)]
    others = [p for n, p in model.named_parameters() if not n.endswith('gate.scores')]
    opt = torch.optim.AdamW(others, lr=args.lr, weight_decay=args.weight_decay)
    score_opt = torch.optim.SGD(trained_scores or [torch.zeros(1, requires_grad=True)],
                                lr=args.score_lr, momentum=0.9)
    steps_per_epoch = len(data.make_loader(train_set, args.batch_size, shuffle=False, seed=0))
    if world > 1:
        steps_per_epoch = math.ceil(len(train_set) / world / args.batch_size)
    for limit in (args.batches_per_epoch, args.max_batches):
        steps_per_epoch = min(steps_per_epoch, limit or steps_per_epoch)
    total_steps = args.epochs * steps_per_epoch

    def lr_factor(step):  # cosine 1 -> 0 in closed form; per epoch, a --resume with more epochs stays exact
        if args.lr_schedule == 'epoch':
            return 0.5 * (1.0 + math.cos(math.pi * (step // steps_per_epoch) / args.epochs))
        return 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)  # stepped once per batch
    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == 'cuda' else None)

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
            sched.load_state_dict({'lr_lambdas': [None] * len(opt.param_groups), **ckpt['scheduler']})
            start_epoch = int(ckpt['epoch'])
            set_rng_state(ckpt['rng'])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise TrainingError(f'cannot resume from {ckpt_path}: its content does not fit this run '
                                f'({type(e).__name__}: {first}); expected a checkpoint of the same '
                                'configuration written by this script') from None
        for g, base in zip(opt.param_groups, sched.base_lrs):  # schedule of this run's --epochs
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
            x = data.random_shift(x, shift, flip=flip)
            x, y = x.to(device), y.to(device)
            logits = ddp(x)
            ce = torch.nn.functional.cross_entropy(logits, y)
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
            loss.backward()
            opt.step()
            if train_scores:
                score_opt.step()
            sched.step()
            seen += int(y.numel())
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss) * int(y.numel())
            bar.set_postfix(loss=f'{loss_sum / seen:.3f}', acc=f'{correct / seen:.3f}', refresh=False,
                            steps=f'{model.time_step_report()["avg_steps"]:.2f}')
        if world > 1:  # DDP syncs buffers (BatchNorm statistics) only at the next forward: do it now
            for b in model.buffers():
                torch.distributed.broadcast(b, 0)
        recalibrate()
        if master:
            ev = evaluate_all()
            line = {'epoch': epoch + 1, 'train_loss': loss_sum / max(1, seen),
                    'train_acc': correct / max(1, seen), 'val_acc': ev.get('val_accuracy'),
                    'test_acc': ev['accuracy'],
                    'avg_steps': ev['avg_steps'], 'avg_steps_weighted': ev['avg_steps_weighted'],
                    'lr': sched.get_last_lr()[0], 'time_s': round(time.time() - t0, 2)}
            print(json.dumps(line), flush=True)
            with open(log_path, 'a') as f:
                f.write(json.dumps(line) + '\n')
            save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=opt.state_dict(),
                            score_optimizer=score_opt.state_dict(),
                            scheduler=sched.state_dict(), epoch=epoch + 1, rng=rng_state(),
                            config=cfg.to_dict(), dtss=model.dtss, args=vars_for_json(args))

    # ---- final report and export -----------------------------------------
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
        command = ' '.join(['python'] + sys.argv)
        metrics['command'] = command
        if not args.no_export:
            from lava_dtss.deploy.export import deployed_model, export_hdf5
            from lava_dtss.analysis.operations import OperationCounter
            net_path = os.path.join(args.out, 'model.net')
            export_hdf5(model, net_path, dataset=args.dataset, command=command)
            try:
                deployed = deployed_model(net_path)
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


RUN_FILES = ('checkpoint.pt', 'log.jsonl', 'metrics.json', 'model.net', 'model.json')


def prepare_out(args):
    """Check the --out folder before any work: a folder we can write, holding no
    earlier run unless --resume (continue it) or --overwrite (replace it); stale
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


def model_card(m):
    """The small JSON card shipped beside a model file."""
    keys = ('preset', 'dataset', 'dtss', 't_max', 'lambda_m', 'mask_categories', 'mask_weights', 'epochs', 'seed',
            'val_accuracy', 'test_accuracy', 'quantized_test_accuracy', 'active_steps', 'avg_steps',
            'avg_steps_weighted', 'synops_per_sample', 'neuron_updates_per_sample', 'command')
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


def vars_for_json(args):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}


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
