#!/usr/bin/env python
"""Export a network of this project to a NIR graph.

    python scripts/export_nir.py model.net --out graph.nir            # a NetX file (ours or stock)
    python scripts/export_nir.py runs/default/checkpoint.pt --out graph.nir

Conv, dense and flatten layers with CUBA-LIF neurons and the readout are written
in NIR's conventions for the Euler step of --dt (docs/nir.md), with lava_dtss.*
metadata that scripts/import_nir.py turns back into the same integers. Spiking
self-attention and DTSS gates that cut steps have no NIR primitive and are
refused by name (every lava_dtss ViT has attention). Exit codes: 0 written,
2 refused or bad input (one line on stderr). The graph is written to a temporary
file in the same folder, then renamed.
"""
import argparse
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, ROOT)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('source', help='network file (.net, NetX HDF5) or training checkpoint (.pt)')
    p.add_argument('--out', required=True, help='NIR graph to write')
    p.add_argument('--dt', type=float, default=1e-3, help='time step the NIR time constants refer to (default 1e-3)')
    p.add_argument('--t-max', type=int, default=None, help='time steps per sample for stock NetX files')
    args = p.parse_args(argv)
    if args.t_max is not None and args.t_max < 1:    # 0 was taken as 'not given' (issue 26)
        raise ValueError(f'--t-max must be >= 1 time step, got {args.t_max}')
    if not args.dt > 0 or args.dt == float('inf'):
        raise ValueError(f'--dt must be a positive number, got {args.dt}')
    from lava_dtss.deploy.nir_interchange import export_nir, write_graph
    if not os.path.exists(args.source):
        raise ValueError(f'{args.source}: no such file (expected a .net network or a .pt checkpoint)')
    source = args.source
    if args.source.endswith('.pt'):
        from lava_dtss.training.checkpoints import load_checkpoint, model_from_checkpoint
        from lava_dtss.deploy.export import model_to_spec
        model, _ = model_from_checkpoint(load_checkpoint(args.source), args.source)
        source = model_to_spec(model)
        where = args.source
    else:
        where = args.source
    try:
        graph = export_nir(source, dt=args.dt, t_max=args.t_max)
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(where) else f'{where}: {msg}') from None
    write_graph(graph, args.out)
    print(f'wrote {args.out}: {len(graph.nodes)} NIR nodes, dt {args.dt:g}')
    return 0


if __name__ == '__main__':
    try:
        code = main()
    except KeyboardInterrupt:
        print('interrupted; nothing written', file=sys.stderr)
        code = 130
    except Exception as e:
        from lava_dtss.training.checkpoints import TrainingError
        if not isinstance(e, (ValueError, OSError, TrainingError)):
            raise
        print(f'error: {e}', file=sys.stderr)
        code = 2
    sys.exit(code)
