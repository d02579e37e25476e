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
    from lava_dtss import data
    from lava_dtss.export import deployed_accuracy, export_hdf5
    from lava_dtss.model import SpikingViT, ViTConfig
    from lava_dtss.training import evaluate, load_checkpoint, write_json
    ckpt = load_checkpoint(args.checkpoint)
    try:
        model = SpikingViT(ViTConfig.from_dict(ckpt['config']), dtss=bool(ckpt.get('dtss', True)))
        model.load_state_dict(ckpt['model'])
    except (KeyError, TypeError, RuntimeError) as e:
        raise ValueError(f'{args.checkpoint} is not a lava_dtss training checkpoint ({e})') from None
    train_args = ckpt.get('args', {})
    dataset = train_args.get('dataset', 'digits')
    command = ' '.join(['python'] + sys.argv)
    export_hdf5(model, args.out, dataset=dataset, command=command)
    test = data.load_dataset(dataset, 'test', args.data_dir or train_args.get('data_dir'))
    loader = data.make_loader(test, 256, shuffle=False, seed=0)
    ev = evaluate(model, loader)
    card = {'preset': model.cfg.name, 'dataset': dataset, 'dtss': model.dtss, 't_max': model.cfg.t_max,
            'test_accuracy': ev['accuracy'], 'quantized_test_accuracy': deployed_accuracy(args.out, loader),
            'active_steps': ev['active_steps'], 'avg_steps': ev['avg_steps'],
            'avg_steps_weighted': ev['avg_steps_weighted'], 'training': train_args,
            'command': command}
    write_json(os.path.splitext(args.out)[0] + '.json', card)
    print(f'wrote {args.out}: test accuracy {card["test_accuracy"]:.4f} (float), '
          f'{card["quantized_test_accuracy"]:.4f} (exported fixed point), average steps {card["avg_steps"]:.2f}')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except Exception as e:
        from lava_dtss.data import DatasetError
        from lava_dtss.training import TrainingError
        if isinstance(e, (DatasetError, TrainingError, ValueError, OSError)):
            print(f'error: {e}', file=sys.stderr)
            sys.exit(1)
        raise
