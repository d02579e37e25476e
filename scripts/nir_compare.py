#!/usr/bin/env python
"""NIR comparison on scikit-learn digits: a small spiking CNN trained in snnTorch
and one in Norse, exported with their own NIR export, imported here and run on
Lava; accuracy and output spike counts against the framework's own simulation
of the same network at the same dt and steps (360 test images, T = 8).

    python scripts/nir_compare.py                      # writes results/nir/*.json and the two .nir graphs
    python scripts/nir_compare.py --lava-dl-nir PATH   # also lava-dl's nir_lava.py on the same graphs

lava-dl 0.6.0 ships no NIR converter; its nir_lava.py exists only on an unmerged
lava-dl branch (commit 87e6dfb, 2023-08-23). Pass that file as PATH (e.g.
`git show 87e6dfb:src/lava/lib/dl/netx/nir_lava.py > nir_lava.py` in a lava-dl
clone) to record what it does with the same graphs.
"""
import argparse
import importlib.util
import os
import sys
import traceback

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, ROOT)
from lava_dtss.commands import portable_command, portable_path  # noqa: E402


def lava_dl_side(path, graphs, nets, out_dir):
    """What lava-dl's nir_lava.py does with the same graphs (both directions)."""
    import nir
    import numpy as np
    spec = importlib.util.spec_from_file_location('nir_lava', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import hashlib
    with open(path, 'rb') as f:
        res = {'file': portable_path(path), 'sha256': hashlib.sha256(f.read()).hexdigest()}

    def attempt(fn):
        try:
            return {'ok': True, 'result': fn()}
        except Exception as e:   # recorded, not hidden: this is what the converter does
            tb = traceback.extract_tb(e.__traceback__)[-1]
            return {'ok': False, 'error': f'{type(e).__name__}: {str(e)[:200]}',
                    'where': f'{os.path.basename(tb.filename)}:{tb.lineno}'}
    for name, gpath in graphs.items():
        g = nir.read(gpath, type_check=False)
        res[f'nir_to_lavadl_net({name})'] = attempt(lambda: repr(mod.nir_to_lavadl_net(g))[:200])
        net = nets[name]
        res[f'convert_to_nir({name} network imported here)'] = attempt(
            lambda: mod.convert_to_nir(net, os.path.join(out_dir, '.lavadl_tmp.nir')))
    # its own assumptions met (integer node names in edge order, CubaLIF neurons with scalar
    # parameters, no Output node, the nir 0.x Input.shape attribute): does the network it builds carry the graph's weights and decays?
    nodes = {'0': nir.Input(input_type={'input': np.array([4])}),
             '1': nir.Affine(weight=np.arange(12, dtype=float).reshape(3, 4) / 10, bias=np.zeros(3)),
             '2': nir.CubaLIF(tau_syn=np.array(2e-3), tau_mem=np.array(4e-3), r=np.array(1.0),   # scalars:
                              v_leak=np.array(0.0), v_threshold=np.array(1.0))}   # its `tau == inf` tests
    g = nir.NIRGraph(nodes=nodes, edges=[(0, 1), (1, 2)], type_check=False)   # no Output: it refuses one
    import torch
    torch.manual_seed(0)      # the blocks it builds start from random weights: make the record repeatable
    had = hasattr(nir.Input, 'shape')
    nir.Input.shape = property(lambda self: tuple(self.input_type['input']))   # nir 0.x attribute
    try:
        r = attempt(lambda: mod.nir_to_lavadl_net(g))
    finally:
        if not had:
            del nir.Input.shape
    if r['ok']:
        block = r['result'].blocks[1]
        w = block.synapse.weight.detach().reshape(3, 4).numpy()
        r = {'ok': True, 'weights_copied': bool(np.allclose(w, nodes['1'].weight)),
             'current_decay': float(block.neuron.current_decay.detach().reshape(-1)[0]) / (1 << 12),
             'voltage_decay': float(block.neuron.voltage_decay.detach().reshape(-1)[0]) / (1 << 12),
             'graph_dt_over_tau_syn_for_dt_1e-3': 1e-3 / 2e-3, 'graph_weight_01': float(nodes['1'].weight[0, 1]),
             'built_weight_01': float(w[0, 1])}
    res['nir_to_lavadl_net(Input-Affine-CubaLIF, its conventions, Input.shape shim)'] = r
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default=os.path.join(ROOT, 'results', 'nir'), help='result folder')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--lava-dl-nir', default=None, metavar='PATH', help="lava-dl's nir_lava.py (see above)")
    args = p.parse_args(argv)
    import nir
    import torch
    from lava_dtss.analysis import nir_frameworks as fw
    from lava_dtss.deploy.nir_interchange import import_nir, write_graph
    from lava_dtss.training.checkpoints import write_json
    torch.set_num_threads(1)
    import tempfile
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='nir_compare.')
    images, labels = fw.digits('test')
    command = portable_command()
    graphs, nets = {}, {}
    try:
        for make in (fw.snntorch_cnn, fw.norse_cnn):
            src = make(seed=args.seed)
            graph = src.graph()
            gpath = os.path.join(args.out, f'{src.name}_digits.nir')
            write_graph(graph, gpath)          # Norse's graph needs write_graph (docs/nir.md); snnTorch's as is
            graphs[src.name] = gpath
            net_path = nets[src.name] = os.path.join(tmp, f'{src.name}.net')
            spec = import_nir(gpath, dt=src.dt, steps=fw.T, dataset='digits', out=net_path, command=command)
            row = fw.compare(src, graph, spec, images, labels, loihi_samples=20)
            # the same graph with 8-bit input (round(255 x): digits pixels k/16 then carry rounding)
            spec255 = import_nir(gpath, dt=src.dt, steps=fw.T, dataset='digits', input_scale=255)
            row255 = fw.compare(src, graph, spec255, images, labels)
            row['input_scale_255'] = {k: row255[k] for k in ('accuracy_lava', 'accuracy_diff_pp',
                                                              'predictions_agree', 'output_counts_identical')}
            row.update(graph=os.path.relpath(gpath, ROOT),
                       import_command=f'python scripts/import_nir.py {os.path.relpath(gpath, ROOT)} --out model.net '
                                      f'--dt {src.dt:g} --steps {fw.T} --dataset digits',
                       nir_version=nir.version, torch=torch.__version__, command=command, seed=args.seed)
            write_json(os.path.join(args.out, f'{src.name}.json'), row)
            print(f'{src.framework}: source {row["accuracy_source"]:.4f}, Lava {row["accuracy_lava"]:.4f} '
                  f'({row["accuracy_diff_pp"]:+.2f} pp), predictions agree {row["predictions_agree"]:.4f}, '
                  f'output counts identical {row["output_counts_identical"]:.4f}; input scale 255: Lava '
                  f'{row255["accuracy_lava"]:.4f}, counts identical {row255["output_counts_identical"]:.4f}; '
                  f'--build loihi = fused: {row["loihi_build_spikes_equal_fused"]}')
        if args.lava_dl_nir:
            res = lava_dl_side(args.lava_dl_nir, graphs, nets, tmp)
            res['command'] = command
            write_json(os.path.join(args.out, 'lava_dl_nir_lava.json'), res)
            for k, v in res.items():
                if isinstance(v, dict):
                    print(f'lava-dl {k}: {v}')
    finally:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
