#!/usr/bin/env python
"""The standard-process (Loihi 2) build at a preset's scale, on the CPU simulator.

    python scripts/loihi_scale.py                                  # spikformer-4-384, 2 samples
    python scripts/loihi_scale.py --depth 1 --image-size 8 --samples 2
    python scripts/loihi_scale.py --json results/loihi/spikformer-4-384.json

Builds the preset untrained (seeded Kaiming weights; BatchNorm statistics of one
batch of random images, so that every layer fires; each gate at a random active
step count in 1..T_max), exports it to NetX HDF5, and on random CIFAR-shaped
images (seeded) reports:

- the measured largest current and voltage of every gated layer over its active
  steps against Loihi 2's 24-bit state (``loihi_check.measured_state``);
- the plan of ``--build loihi`` (which gate each layer gets, pipeline depth);
- the Lava run (``Loihi2SimCfg(select_tag='fixed_pt')``): wall time, start-up,
  time per Lava step, and whether every layer's spikes and the logits equal
  training-side inference.

An untrained network stands in for a trained one: the build and its exactness do
not depend on what the weights learned, only on their ranges, which the export
bounds the same way (8-bit weights, 24-bit current).
"""
import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, ROOT)


from lava_dtss.analysis.benchmark import random_images, untrained_export as active_export  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--preset', default='spikformer-4-384')
    p.add_argument('--depth', type=int, default=None, help="transformer blocks (default: the preset's)")
    p.add_argument('--image-size', type=int, default=None, help="input size (default: the preset's)")
    p.add_argument('--samples', type=int, default=2)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--deadline-h', type=float, default=6.0, help='give up the Lava run after this many hours')
    p.add_argument('--json', default=None, metavar='PATH', help='write the report as JSON')
    args = p.parse_args(argv)
    if args.samples < 1:
        p.error(f'--samples {args.samples}: expected at least 1')
    import numpy as np
    from lava_dtss.deploy import loihi_build
    from lava_dtss.deploy.loihi_check import check_network, format_measured_state, measured_state
    from lava_dtss.deploy.netx_file import read_netx
    from lava_dtss.deploy.reference import direct_images, reference_run
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'model.net')
        active_export(args.preset, path, depth=args.depth, image_size=args.image_size, seed=args.seed)
        spec = read_netx(path)
    images = random_images(spec, args.samples)
    measured = measured_state(spec, images)
    print(format_measured_state(measured, check_network(spec)), flush=True)
    plan = loihi_build.plan(spec, spec.t_max)
    gates = {s.name: s.gate_mode for s in plan.stages.values() if s.gate_mode}
    print(f'gates: {sum(m == "relay" for m in gates.values())} relay, '
          f'{sum(m == "inhibit" for m in gates.values())} inhibit; pipeline depth {plan.max_offset}', flush=True)
    ref_logits, ref_fps = reference_run(spec, images)
    frames = direct_images(images, spec.layers[0].params['inputScale'])
    t0 = time.perf_counter()
    res = loihi_build.run(spec, frames, deadline_s=args.deadline_h * 3600)
    total = time.perf_counter() - t0
    differing = [n for n in ref_fps if not np.array_equal(ref_fps[n], res.fingerprints[n])]
    per_step = (res.wall_s - res.startup_s) / res.num_steps
    report = {
        'preset': args.preset, 'depth': args.depth or 'preset', 'image_size': list(spec.layers[0].shape),
        'samples': args.samples, 'seed': args.seed, 't_max': spec.t_max, 'period': res.period,
        'lava_steps': res.num_steps, 'pipeline_depth': plan.max_offset, 'processes': res.processes,
        'gates': gates, 'wall_s': round(res.wall_s, 1), 'startup_s': round(res.startup_s, 1),
        'build_and_run_s': round(total, 1), 's_per_lava_step': round(per_step, 3),
        'spikes_equal_all_layers': not differing, 'layers_differing': differing,
        'logits_equal': bool(np.array_equal(ref_logits, res.logits)),
        'spikes_per_layer': {n: int(fp[:, 0].sum()) for n, fp in ref_fps.items()},
        'measured_state': measured,
        'machine': f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end',
        'command': 'python scripts/loihi_scale.py ' + ' '.join(argv if argv is not None else sys.argv[1:])}
    print(f'Lava: {res.processes} processes, {res.num_steps} steps, {res.wall_s:.1f} s '
          f'(start-up {res.startup_s:.1f} s), {per_step:.2f} s per Lava step; spikes identical in every '
          f'layer: {not differing}; logits identical: {report["logits_equal"]}')
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        tmp = args.json + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, args.json)
    return 0 if not differing and report['logits_equal'] else 1


if __name__ == '__main__':
    sys.exit(main())
