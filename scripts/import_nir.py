#!/usr/bin/env python
"""Import a NIR graph (snnTorch, Norse, ... or our own export) as a NetX HDF5
network of this project with Loihi 2 integers, ready for scripts/run_lava.py.

    python scripts/import_nir.py GRAPH.nir --out model.net --dt 1e-4 --steps 8 --dataset digits
    python scripts/run_lava.py --model model.net            # --check-loihi, --build loihi as for any file

NIR stores no time step: --dt is the step in the graph's time unit (snnTorch
writes its time constants for dt = 1e-4; Norse 1.1.0's graphs are consistent
with dt = 1e-6 for its default 1e-3, see docs/nir.md); graphs written by
scripts/export_nir.py carry dt and T_max. Discretisation, quantisation and what
is refused: docs/nir.md. Exit codes: 0 written, 2 refused or bad input (one line
on stderr), 130 interrupted.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from lava_dtss.commands import portable_command  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('graph', help='NIR graph file (nir.write)')
    p.add_argument('--out', required=True, help='network file to write (NetX HDF5, atomically)')
    p.add_argument('--dt', type=float, default=None,
                   help="time step in the graph's time unit (default: the graph's lava_dtss.dt metadata)")
    p.add_argument('--steps', type=int, default=None,
                   help="time steps per sample, T_max (default: the graph's lava_dtss.t_max metadata)")
    p.add_argument('--dataset', default=None,
                   help='dataset the network classifies (stored for run_lava.py; a flat input of as many '
                        'values as its images gets the image shape and a flatten layer)')
    p.add_argument('--input-scale', type=int, default=None, metavar='S',
                   help='image value x in [0, 1] -> integer input round(S x) (default: 16 for --dataset '
                        'digits, whose pixels are k/16, else 255, 8-bit)')
    p.add_argument('--method', default='euler', choices=('euler', 'exact'),
                   help='decay per step: dt/tau (forward Euler, as snnTorch and Norse; default) or '
                        '1 - exp(-dt/tau)')
    p.add_argument('--json', default=None, metavar='PATH', help='also write the import report as JSON')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from lava_dtss.deploy.nir_interchange import import_nir
    out = os.path.abspath(args.out)
    if os.path.isdir(out):
        raise ValueError(f'--out {args.out} is a folder; expected a file name')
    if not os.path.isdir(os.path.dirname(out)):
        raise ValueError(f'--out {args.out}: folder {os.path.dirname(out)} does not exist')
    from lava_dtss.training.checkpoints import unwritable
    for flag, path in (('--out', args.out), ('--json', args.json)):   # both before --out is written
        problem = path and unwritable(path)
        if problem:
            raise ValueError(f'{flag} {path}: {problem}')
    import warnings
    with warnings.catch_warnings():     # printed once below, as 'warning:' lines
        warnings.simplefilter('ignore')
        spec = import_nir(args.graph, dt=args.dt, steps=args.steps, dataset=args.dataset,
                          input_scale=args.input_scale, method=args.method, out=args.out,
                          command=portable_command())
    rep = json.loads(spec.meta['nir'])
    for line in rep.get('warnings', []):
        print(f'warning: {line}', file=sys.stderr)
    print(f'wrote {args.out}: {len(spec.layers)} layers, T_max {spec.t_max}, dt {rep["dt"]:g} ({rep["method"]}), '
          f'input scale {rep["input_scale"]}')
    print(f'{"layer":24s} {"NIR node":14s} {"iDecay":>6s} {"vDecay":>6s} {"vThMant":>7s} {"|w|max":>6s} '
          f'{"w LSB/threshold":>15s} {"error/threshold":>15s}')
    for r in rep['layers']:
        if 'vThMant' in r:
            print(f'{r["layer"]:24s} {r["type"]:14s} {r["iDecay"]:6d} {r["vDecay"]:6d} {r["vThMant"]:7d} '
                  f'{r["weight_max"]:6d} {r["weight_lsb_of_threshold"]:15.2e} '
                  f'{r["fixed_point_error_of_threshold"]:15.2e}')
        else:
            print(f'{"readout":24s} {r["type"]:14s} {r["readout"]}')
    print('error/threshold: worst drift of a voltage from the float graph after T_max steps of full input, '
          'from the rounding of weights and bias, in thresholds (docs/nir.md)')
    if rep.get('warnings'):
        print(f'{len(rep["warnings"])} warning(s) above: the network may stay silent (docs/nir.md)')
    if args.json:
        from lava_dtss.training.checkpoints import write_json
        write_json(args.json, rep)
    return 0


if __name__ == '__main__':
    try:
        code = main()
    except KeyboardInterrupt:
        print('interrupted; nothing written', file=sys.stderr)
        code = 130
    except (ValueError, OSError) as e:   # NIRImportError and NetXFormatError are ValueErrors
        print(f'error: {e}', file=sys.stderr)
        code = 2
    sys.exit(code)
