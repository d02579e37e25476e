#!/usr/bin/env python
"""Export a training checkpoint to NetX HDF5 (with DTSS extensions) and a
model card, and report the fixed-point model's test accuracy.

    python scripts/export_netx.py runs/default/checkpoint.pt --out model.net

The export itself is lava_dtss.deploy.export.export_checkpoint.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from lava_dtss.commands import portable_command  # noqa: E402
import signal  # noqa: E402
if __name__ == '__main__':   # Ctrl-C while the libraries load: one line, exit 130
    signal.signal(signal.SIGINT, lambda *_: (sys.stderr.write('interrupted\n'), os._exit(130)))

if __name__ == '__main__':
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('checkpoint', help='checkpoint.pt written by scripts/train_slayer.py')
    p.add_argument('--out', required=True, help='output .net file (a .json model card is written beside it)')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing --out file and its .json card (refused without this flag)')
    p.add_argument('--data-dir', default=None, help='dataset folder, for the accuracy of the exported model')
    args = p.parse_args(argv)
    from lava_dtss.deploy import export
    card = export.export_checkpoint(args.checkpoint, args.out, data_dir=args.data_dir,
                                    command=portable_command(), overwrite=args.overwrite)
    print(f'wrote {args.out}: test accuracy {card["test_accuracy"]:.4f} (float), '
          f'{card["quantized_test_accuracy"]:.4f} (exported fixed point), average steps {card["avg_steps"]:.2f}')
    return 0


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
    except KeyboardInterrupt:
        print('interrupted; nothing half-written is left', file=sys.stderr)
        sys.exit(130)
