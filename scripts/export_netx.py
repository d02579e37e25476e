#!/usr/bin/env python
"""Export a training checkpoint to NetX HDF5 (with DTSS extensions) and a
model card, and report the fixed-point model's test accuracy.

    python scripts/export_netx.py runs/default/checkpoint.pt --out model.net
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('checkpoint', help='checkpoint.pt written by scripts/train_slayer.py')
    p.add_argument('--out', required=True, help='output .net file (a .json model card is written beside it)')
    p.add_argument('--data-dir', default=None, help='dataset folder, for the accuracy of the exported model')
    args = p.parse_args(argv)
    from lava_dtss.training import data
    from lava_dtss.deploy.export import deployed_accuracy, export_hdf5
    from lava_dtss.training import evaluate, load_checkpoint, write_json
    ckpt = load_checkpoint(args.checkpoint)
    model, train_args = model_from_checkpoint(ckpt, args.checkpoint)
    dataset = train_args.get('dataset', 'digits')
    command = ' '.join(['python'] + sys.argv)
    test = data.load_dataset(dataset, 'test', args.data_dir or train_args.get('data_dir'))   # before writing
    loader = data.make_loader(test, 256, shuffle=False, seed=0)
    export_hdf5(model, args.out, dataset=dataset, command=command)
    try:      # the .net and its .json model card exist together or not at all
        ev = evaluate(model, loader)
        card = {'preset': model.cfg.name, 'dataset': dataset, 'dtss': model.dtss, 't_max': model.cfg.t_max,
                'test_accuracy': ev['accuracy'], 'quantized_test_accuracy': deployed_accuracy(args.out, loader),
                'active_steps': ev['active_steps'], 'avg_steps': ev['avg_steps'],
                'avg_steps_weighted': ev['avg_steps_weighted'], 'training': train_args,
                'command': command}
        write_json(os.path.splitext(args.out)[0] + '.json', card)
    except BaseException:
        if os.path.isfile(args.out):
            os.unlink(args.out)
        raise
    print(f'wrote {args.out}: test accuracy {card["test_accuracy"]:.4f} (float), '
          f'{card["quantized_test_accuracy"]:.4f} (exported fixed point), average steps {card["avg_steps"]:.2f}')
    return 0


# ViTConfig fields that are whole numbers, and the largest value a checkpoint may hold
INT_FIELDS = {'in_channels': 1 << 12, 'image_size': 1 << 12, 'num_classes': 1 << 16, 'embed_dim': 1 << 14,
              'depth': 1 << 8, 'heads': 1 << 10, 'mlp_ratio': 1 << 6, 't_max': 1 << 8}


def model_from_checkpoint(ckpt, path):
    """``(model, training args)`` of a checkpoint's content, every part checked
    first: ``ValueError`` with one line naming what is wrong (a key that is
    missing, of the wrong type, or a weight of the wrong shape)."""
    import torch
    from lava_dtss.model import SpikingViT, ViTConfig

    def bad(msg):
        raise ValueError(f'{path} is not a lava_dtss training checkpoint: {msg} '
                         '(expected a checkpoint.pt written by scripts/train_slayer.py)')
    if not isinstance(ckpt, dict):
        bad(f'it holds a {type(ckpt).__name__}, expected a dict with keys config, model, args')
    for key in ('config', 'model'):
        if key not in ckpt:
            bad(f'missing key {key!r}')
        if not isinstance(ckpt[key], dict):
            bad(f'{key!r} is a {type(ckpt[key]).__name__}, expected a dict')
    train_args = ckpt.get('args', {})
    if not isinstance(train_args, dict):
        bad(f"'args' is a {type(train_args).__name__}, expected a dict")
    for key in ('dataset', 'data_dir'):
        if train_args.get(key) is not None and not isinstance(train_args[key], str):
            bad(f"args[{key!r}] = {train_args[key]!r}, expected a string")
    dtss = ckpt.get('dtss', True)
    if not isinstance(dtss, (bool, int)) or dtss not in (0, 1):
        bad(f"'dtss' = {dtss!r}, expected true or false")
    cfg = ckpt['config']
    for key, top in INT_FIELDS.items():
        v = cfg.get(key)
        if key in cfg and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top):
            bad(f'config[{key!r}] = {v!r}, expected a whole number in 1..{top}')
    try:
        config = ViTConfig.from_dict(cfg)
        model = SpikingViT(config, dtss=bool(dtss))
    except Exception as e:   # unknown or missing fields, values the model cannot be built with
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        bad(f"'config' does not describe a lava_dtss model ({type(e).__name__}: {first})")
    expected = model.state_dict()
    state = ckpt['model']
    missing = [k for k in expected if k not in state]
    if missing:
        bad(f"'model' misses {len(missing)} weight(s), e.g. {missing[0]!r}")
    extra = [k for k in state if k not in expected]
    if extra:
        bad(f"'model' holds {len(extra)} unknown weight(s), e.g. {extra[0]!r}")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            bad(f"'model'[{k!r}] is a {type(v).__name__}, expected a tensor")
        if tuple(v.shape) != tuple(expected[k].shape):
            bad(f"'model'[{k!r}] has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
        if v.is_floating_point() != expected[k].is_floating_point() or v.is_complex():
            bad(f"'model'[{k!r}] has dtype {v.dtype}, expected {expected[k].dtype}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad(f"'model'[{k!r}] holds NaN or infinite values")
    model.load_state_dict(state)
    return model, train_args


if __name__ == '__main__':
    try:
        sys.exit(main())
    except Exception as e:
        from lava_dtss.training.data import DatasetError
        from lava_dtss.training import TrainingError
        if isinstance(e, (DatasetError, TrainingError, ValueError, OSError)):
            print(f'error: {e}', file=sys.stderr)
            sys.exit(1)
        raise
