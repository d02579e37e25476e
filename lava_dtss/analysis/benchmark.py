"""One benchmark for the speeds every experiment here depends on, each printed
beside its reference run as a ratio (samples/s and peak memory).

    python scripts/benchmark.py                        # everything (about 10 min on 2 cores)
    python scripts/benchmark.py --skip-lava --skip-exit   # training only
    python scripts/benchmark.py --model M.net          # Lava part on another model file

    from lava_dtss.analysis.benchmark import BenchmarkConfig, run_benchmark
    run_benchmark(BenchmarkConfig(skip_lava=True))     # the same from Python (prints the tables)

Training (fmnist preset, batch 64, T = 4, forward + backward + AdamW step, same
weights and batches): ours (the fused neuron's compiled loop, and its PyTorch
path) against stock SLAYER CUBA (``slayer.neuron.cuba.Neuron`` in our blocks, and
the whole ``slayer.block.cuba`` path: Conv3d synapse on ``[N, C, H, W, T]``),
SpikingJelly's multi-step LIF where installed (``pip install -e ".[bench]"``), and
the same network with ``clamp(x / threshold, 0, 1)`` (a clipped ReLU) in place of
every LIF, still over T steps: what the spiking path costs beyond its matrix
products. Each implementation runs in its own process (its peak resident memory
is that process's), rounds alternate, the best round counts.

Lava (gated runtime, fixed-point CPU simulator): the training-side fixed-point
reference, Lava one sample at a time (B = 1), and batched (B samples side by side
in every process); then gated and ungated batched runs alternated, best of the
rounds, start-up excluded: the measured wall-time saving of gating beside the
saving the counted operations predict. Every Lava run's logits must equal the
reference's, or the script exits 1.

Early exit: Lava with the margin policy and continuous batching against the
windowed run without exit, alternately (``bench_exit``): Lava steps and wall
time, as ratios beside the fall in average steps.

Stock NetX: a conv-heavy and a dense-heavy network made and exported with lava-dl's
own blocks, run by stock ``netx.hdf5.Network`` and by our runtime (stock timing) on
the same input; the last layer's spikes must be equal.
"""
import glob
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

from ..commands import ROOT, portable_path
# the shipped Fashion-MNIST DTSS model (scripts/study.py ships the headline arm there)
DEFAULT_MODEL = next(iter(sorted(glob.glob(os.path.join(ROOT, 'netx_models', 'fmnist_dtss-*.net')))
                          + sorted(glob.glob(os.path.join(ROOT, 'netx_models', 'fmnist-*_dtss-*.net')))),
                     os.path.join('netx_models', 'fmnist_dtss-<headline arm>.net'))   # then an earlier study's
# (worker name, label); the first is the reference of the ratios
TRAIN_IMPLS = (('fast', 'ours: fused neuron, compiled loop'),
               ('fast-torch', 'ours: fused neuron, PyTorch path'),
               ('stock', 'stock slayer.neuron.cuba, our blocks'),
               ('stock-block', 'stock slayer.block.cuba path'),
               ('jelly', 'SpikingJelly MultiStepLIFNode'),
               ('ann', 'same network, clipped ReLU'))


def report_header(command: str) -> str:
    """First lines of a saved benchmark report: the command, the UTC date, the CPU
    (model, cores) and the load average when it started (the ratios beside each
    other are what to compare across machines; absolute speeds depend on both)."""
    import datetime
    import platform
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    load = ', '.join(f'{x:.2f}' for x in os.getloadavg())
    now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    return (f'`{command}`, {now}; {cpu}, {os.cpu_count()} cores, load average at start {load} '
            '(1, 5, 15 min)')


def peak_rss_mb(who=resource.RUSAGE_SELF):
    return resource.getrusage(who).ru_maxrss / 1024   # Linux: KiB


def jelly_installed() -> bool:
    import importlib.util
    return importlib.util.find_spec('spikingjelly') is not None


def build_bench_model(impl, preset):
    """The fmnist network as each row of the training table builds it:
    'fast' (compiled CUBA loop) and 'fast-torch' (LAVA_DTSS_KERNEL=0, set by the
    caller) are ours; 'stock' swaps in ``slayer.neuron.cuba.Neuron``; 'stock-block'
    also computes every synapse as ``slayer.block.cuba`` does (``slayer.synapse.Conv``,
    a Conv3d with a one-step time kernel, on ``[N, C, H, W, T]``, then BatchNorm3d,
    the image convolved at every step); 'jelly' puts SpikingJelly's multi-step LIF
    (tau 2, hard reset to 0, input not decayed: the same LIF, in float) in place of
    every CUBA neuron; 'ann' is the ReLU twin at the same T."""
    import torch
    from ..model import blocks, build_model
    neuron = {'fast-torch': 'fast', 'stock-block': 'stock', 'jelly': 'fast'}.get(impl, impl)
    model = build_model(preset, neuron_impl=neuron)
    if impl == 'stock-block':
        def stock_current(self, x):
            z = self.synapse(x)
            return self.norm(z) if self.norm is not None else z
        blocks.SpikingConv.synaptic_current = stock_current
    if impl == 'jelly':
        from spikingjelly.clock_driven import neuron as sj_neuron

        class JellyLIF(torch.nn.Module):
            """SpikingJelly's MultiStepLIFNode on our ``[N, ..., T]`` layout."""
            def __init__(self, threshold):
                super().__init__()
                self.node = sj_neuron.MultiStepLIFNode(tau=2.0, decay_input=False, v_threshold=float(threshold),
                                                       v_reset=0.0, detach_reset=True, backend='torch')

            def forward(self, x, bias=None):
                self.node.reset()
                return self.node(x.movedim(-1, 0)).movedim(0, -1)
        for m in model.modules():
            if hasattr(m, 'gate') and isinstance(getattr(m, 'neuron', None), torch.nn.Module):
                m.neuron = JellyLIF(m.neuron.threshold)
    return model


def train_worker(impl, preset, batch, steps, threads):
    """Time ``steps`` training steps of one implementation (run in a fresh process)."""
    if impl == 'fast-torch':
        os.environ['LAVA_DTSS_KERNEL'] = '0'
    import torch
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_bench_model(impl, preset)
    cfg = model.cfg
    x = torch.rand(batch, cfg.in_channels, cfg.image_size, cfg.image_size)
    y = torch.randint(0, cfg.num_classes, (batch,))
    opt = torch.optim.AdamW(model.parameters(), 1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    step()   # warm-up (and the one-time build of the compiled loop)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    rate = steps * batch / (time.perf_counter() - t0)
    print(json.dumps({'samples_per_s': rate, 'peak_rss_mb': peak_rss_mb()}))


def bench_training(args):
    impls = [(i, label) for i, label in TRAIN_IMPLS if i != 'jelly' or jelly_installed()]
    best = {}
    for _ in range(args.rounds):
        for impl, _label in impls:   # a fresh process each: its own peak memory, its own compiled-loop choice
            call = (f'train_worker({impl!r}, {args.preset!r}, {args.batch_size}, {args.train_steps}, '
                    f'{args.threads})')
            cmd = [sys.executable, '-c', f'from lava_dtss.analysis.benchmark import train_worker; {call}']
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f'error: training benchmark of {impl} failed:\n{out.stderr[-2000:]}')
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if r['samples_per_s'] > best.get(impl, {}).get('samples_per_s', 0):
                best[impl] = r
    ref = best['fast']['samples_per_s']
    print(f'\n## Training: preset {args.preset}, batch {args.batch_size}, T = 4, best of {args.rounds} alternating '
          f'rounds of {args.train_steps} steps, one process each')
    print(f'{"implementation":40s} {"samples/s":>10s} {"ours is":>9s} {"peak RSS MB":>12s} {"60k images":>11s}')
    for impl, label in impls:
        r = best[impl]
        print(f'{label:40s} {r["samples_per_s"]:10.1f} {ref / r["samples_per_s"]:8.2f}x '
              f'{r["peak_rss_mb"]:12.0f} {60000 / r["samples_per_s"] / 60:7.1f} min')
    if not jelly_installed():
        print('SpikingJelly: not installed (optional: pip install -e ".[bench]", or make bench)')
    print(f'ours / stock slayer.block.cuba path: {ref / best["stock-block"]["samples_per_s"]:.2f}x (target >= 3x); '
          f'ours / stock neuron in our blocks: {ref / best["stock"]["samples_per_s"]:.2f}x; '
          f'ReLU network / ours: {best["ann"]["samples_per_s"] / ref:.2f}x (target <= 1.3x)'
          + (f'; ours / SpikingJelly: {ref / best["jelly"]["samples_per_s"]:.2f}x (target >= 1x)'
             if 'jelly' in best else ''))
    return best


def bench_lava(args):
    import numpy as np
    import torch
    from ..deploy import lava_runtime
    from ..deploy.netx_file import read_netx
    from ..deploy.reference import direct_images, reference_run
    from ..training import data
    spec = read_netx(args.model)
    test = data.load_dataset(spec.meta.get('dataset') or 'digits', 'test', args.data_dir)
    n = min(args.lava_samples, len(test))
    images = torch.stack([test[i][0] for i in range(n)])
    frames = direct_images(images, spec.layers[0].params.get('inputScale', 1))
    t0 = time.perf_counter()
    ref_logits, _ = reference_run(spec, images)
    ref_rate = n / (time.perf_counter() - t0)
    rows = [('training-side fixed-point reference', n, ref_rate, None, None)]
    n1 = min(args.single_samples, n)
    r1 = lava_runtime.run(spec, frames[:n1], gating=True, batch=1)
    check(r1.logits, ref_logits[:n1], 'Lava B=1')
    rows.append(('Lava gated, B=1', n1, n1 / (r1.wall_s - r1.startup_s), r1.startup_s, r1.memory['total']))
    best = {}
    for _ in range(args.rounds):
        for gating in (True, False):
            r = lava_runtime.run(spec, frames, gating=gating, batch=args.batch)
            check(r.logits, ref_logits, f'Lava B={args.batch}')
            steps_s = r.wall_s - r.startup_s
            if steps_s < best.get(gating, (float('inf'),))[0]:
                best[gating] = (steps_s, r)
    for gating in (True, False):
        s, r = best[gating]
        rows.append((f'Lava {"gated" if gating else "ungated"}, B={args.batch}', n, n / s, r.startup_s,
                     r.memory['total']))
    print(f'\n## Lava: {portable_path(args.model)}, T_max {spec.t_max}; start-up excluded from samples/s; best of {args.rounds} '
          f'alternating rounds for the batched runs; logits equal to the reference in every run')
    print(f'{"run":40s} {"samples":>8s} {"samples/s":>10s} {"vs reference":>13s} {"start-up s":>11s} '
          f'{"est. memory MB":>15s}')
    for label, k, rate, startup, mem in rows:
        print(f'{label:40s} {k:8d} {rate:10.1f} {rate / ref_rate:12.2f}x '
              f'{"" if startup is None else f"{startup:.1f}":>11s} {"" if mem is None else f"{mem / 2**20:.0f}":>15s}')
    (sg, g), (su, u) = best[True], best[False]
    predicted = {k: 1 - sum(getattr(g, k).values()) / sum(getattr(u, k).values()) for k in ('synops', 'neuron_updates')}
    measured = 1 - sg / su
    print(f'gating: measured wall-time saving {100 * measured:.1f}%; predicted by counted operations: '
          f'{100 * predicted["synops"]:.1f}% of synaptic operations, {100 * predicted["neuron_updates"]:.1f}% of '
          f'neuron updates; measured / predicted (neuron updates) '
          f'{measured / predicted["neuron_updates"] if predicted["neuron_updates"] else float("nan"):.2f} '
          f'(target >= 0.7)')
    print(f'whole 10,000-image test set at B={args.batch}: {10000 / (n / sg) / 60:.1f} min of Lava steps '
          f'(target < 3 min); Lava / reference wall time: {(sg / n) / (1 / ref_rate):.2f}x (target <= 2x)')
    print(f'peak resident memory of this process {peak_rss_mb():.0f} MB, of its largest child '
          f'{peak_rss_mb(resource.RUSAGE_CHILDREN):.0f} MB')


def chosen_threshold(model: str):
    """The margin threshold ``scripts/early_exit.py`` chose on validation for
    ``model`` (``results/early-exit*/<name>.json``), or None."""
    from .exit_study import chosen_record
    record = chosen_record(model)
    chosen = record and record['policies']['margin']['chosen']
    return chosen and chosen['threshold']


def bench_exit(args):
    """Lava with and without early exit (margin policy, continuous batching),
    alternately: Lava steps and wall time (start-up excluded) as ratios, beside
    the fall in average steps; exit runs checked against the exit reference."""
    import numpy as np
    import torch
    from ..deploy import lava_runtime
    from ..deploy.netx_file import read_netx
    from ..deploy.reference import direct_images, exit_reference, reference_run
    from ..training import data
    threshold = args.exit_threshold if args.exit_threshold is not None else chosen_threshold(args.model)
    if threshold is None:
        raise SystemExit(f'error: no --exit-threshold and no chosen threshold for {args.model} in '
                         'results/early-exit*/ (run python scripts/early_exit.py)')
    spec = read_netx(args.model)
    test = data.load_dataset(spec.meta.get('dataset') or 'digits', 'test', args.data_dir)
    n = min(args.exit_samples, len(test))
    images = torch.stack([test[i][0] for i in range(n)])
    labels = np.asarray([test[i][1] for i in range(n)])
    frames = direct_images(images, spec.layers[0].params.get('inputScale', 1))
    ref_logits, _ = reference_run(spec, images)
    ref = exit_reference(spec, images, 'margin', threshold)
    best = {}
    for _ in range(args.rounds):
        for label in ('without exit', 'with exit'):
            if label == 'with exit':
                r = lava_runtime.run_exit(spec, frames, 'margin', threshold, batch=args.batch)
                check(r.logits, ref['logits'], 'Lava with exit')
                if not np.array_equal(r.exit_steps, ref['steps']):
                    raise SystemExit('error: Lava with exit: exit steps differ from the training-side reference')
            else:
                r = lava_runtime.run(spec, frames, gating=True, batch=args.batch)
                check(r.logits, ref_logits, 'Lava without exit')
            steps_s = r.wall_s - r.startup_s
            if steps_s < best.get(label, (float('inf'),))[0]:
                best[label] = (steps_s, r)
    (sb, b), (se, e) = best['without exit'], best['with exit']
    avg = float(ref['steps'].mean())
    fall = {'average steps': 1 - avg / spec.t_max, 'Lava steps': 1 - e.num_steps / b.num_steps,
            'wall time': 1 - se / sb}
    print(f'\n## Lava early exit: {portable_path(args.model)}, margin threshold {threshold}, {n} test images, B={args.batch}, '
          f'best of {args.rounds} alternating rounds, start-up excluded')
    print(f'{"run":16s} {"accuracy":>9s} {"avg steps":>10s} {"Lava steps":>11s} {"wall s":>8s} {"synops":>14s}')
    for label, (s, r) in best.items():
        steps = r.exit_steps.mean() if r.exit_steps is not None else spec.t_max
        print(f'{label:16s} {100 * (r.predictions == labels).mean():8.2f}% {steps:10.3f} {r.num_steps:11d} '
              f'{s:8.2f} {sum(r.synops.values()):14d}')
    print('ratios with / without exit: ' + ', '.join(f'{k} x{1 - v:.3f}' for k, v in fall.items()))
    for k in ('Lava steps', 'wall time'):
        print(f'{k} fall / average-step fall: {fall[k] / fall["average steps"]:.2f} (target >= 0.7)'
              if fall['average steps'] > 0 else f'{k}: no average-step fall')
    out = {'model': os.path.relpath(os.path.abspath(args.model), ROOT), 'threshold': threshold, 'samples': n,
           'batch': args.batch, 'rounds': args.rounds, 'fall': fall, 'avg_steps': avg,
           'accuracy': {'without exit': float((b.predictions == labels).mean()),
                        'with exit': float((e.predictions == labels).mean())},
           'wall_s': {'without exit': sb, 'with exit': se},
           'lava_steps': {'without exit': b.num_steps, 'with exit': e.num_steps},
           'synops': {'without exit': sum(b.synops.values()), 'with exit': sum(e.synops.values())}}
    if args.exit_json:
        from ..training.checkpoints import write_json
        write_json(args.exit_json, out)
        print(f'wrote {args.exit_json}')
    return out


def stock_file(path, kind):
    """A stock NetX file exported by lava-dl's own blocks: ``conv`` (conv-heavy:
    2x[28x28] -> conv 16 -> conv 32 stride 2 -> flatten -> dense 10) or ``dense``
    (784 -> 512 -> 256 -> 10); integer weights drawn with a fixed seed."""
    import h5py
    import numpy as np
    import torch
    from lava.lib.dl import slayer
    neuron = {'threshold': 0.5, 'current_decay': 0.25, 'voltage_decay': 0.1, 'requires_grad': False}
    cuba = slayer.block.cuba
    if kind == 'conv':
        shape = (2, 28, 28)
        blocks = [cuba.Conv(neuron, 2, 16, 3, padding=1), cuba.Conv(neuron, 16, 32, 3, stride=2, padding=1),
                  cuba.Flatten(), cuba.Dense(neuron, 32 * 14 * 14, 10)]
    else:
        shape = (784,)
        blocks = [cuba.Dense(neuron, 784, 512), cuba.Dense(neuron, 512, 256), cuba.Dense(neuron, 256, 10)]
    g = torch.Generator().manual_seed(0)
    x = torch.zeros((1,) + shape + (2,))
    with torch.no_grad():
        for b in blocks:
            if getattr(b, 'synapse', None) is not None:
                b.synapse.weight.data = torch.randint(-30, 60, b.synapse.weight.shape, generator=g).float() / 64
            x = b(x)
    with h5py.File(path, 'w') as f:
        layer = f.create_group('layer')
        g0 = layer.create_group('0')
        g0.create_dataset('type', (1,), 'S10', [b'input'])
        g0.create_dataset('shape', data=np.array(shape))
        for i, b in enumerate(blocks, start=1):
            b.export_hdf5(layer.create_group(f'{i}'))
    return shape


def bench_stock_netx(args):
    """Our runtime (stock timing) against stock ``netx.hdf5.Network`` on the same
    file and input stream; last-layer spikes must be equal."""
    import tempfile
    import numpy as np
    from ..deploy import lava_runtime
    from ..fixed_point import fingerprint
    from ..deploy.netx_file import read_netx
    print(f'\n## Stock NetX files (lava-dl export): our runtime (stock timing) vs stock netx.hdf5.Network, '
          f'{args.stock_steps} Lava steps, wall time including compile and start-up')
    print(f'{"network":10s} {"stock NetX s":>13s} {"ours s":>8s} {"ours vs stock":>14s} {"spikes equal":>13s} '
          f'{"last-layer spikes":>18s}')
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ('conv', 'dense'):
            path = os.path.join(tmp, f'{kind}.net')
            shape = stock_file(path, kind)
            k = args.stock_steps
            stream = (rng.random(shape + (k,)) < 0.2).astype(float)
            t0 = time.perf_counter()
            stock_out = lava_runtime.run_stock_netx(path, stream, record='last')[0]
            stock_s = time.perf_counter() - t0
            spec = read_netx(path)
            t0 = time.perf_counter()
            ours = lava_runtime.run(spec, stream[None], timing='stock')
            ours_s = time.perf_counter() - t0
            last = [n.name for n in spec.layers if n.type in ('conv', 'dense')][-1]
            expect = np.array([fingerprint(stock_out[..., t]) for t in range(k)])
            equal = bool(np.array_equal(expect, ours.fingerprints[last][:k]))
            print(f'{kind:10s} {stock_s:13.1f} {ours_s:8.1f} {stock_s / ours_s:13.2f}x {str(equal):>13s} '
                  f'{int(expect[:, 0].sum()):18d}')
            if not equal:
                raise SystemExit(f'error: stock {kind} network: our spikes differ from stock NetX')


def untrained_export(preset: str, path: str, *, depth: int = None, image_size: int = None, seed: int = 0):
    """Export ``preset`` untrained to ``path`` with every layer active: BatchNorm's
    running statistics set to those of one batch of 8 random images (momentum 1),
    every DTSS gate at a random step count in 1..T_max (seeded). Returns the spec.
    Stands in for a trained export where only the scale matters (speed, memory,
    exactness of the Lava builds)."""
    import torch
    from ..deploy.export import export_hdf5
    from ..model import build_model
    torch.manual_seed(seed)
    model = build_model(preset, depth=depth, image_size=image_size)
    cfg = model.cfg
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g))
        steps = torch.randint(1, cfg.t_max + 1, (len(model.gates()),), generator=g)
        for gate, k in zip(model.gates(), steps.tolist()):
            gate.reset_steps(k)
    model.eval()
    return export_hdf5(model, path, dataset='cifar10')


def random_images(spec, n: int, seed: int = 1):
    """``n`` seeded random images ``[n, C, H, W]`` in [0, 1] of the file's input shape."""
    import torch
    return torch.rand(n, *spec.layers[0].shape, generator=torch.Generator().manual_seed(seed))


class PeakMemory:
    """Peak of the summed proportional set size (PSS: shared pages split between the
    processes that map them) of this process and all its descendants (Lava's
    process models), sampled every ``interval`` s while the ``with`` block runs.
    ``peak`` in bytes (0 where ``/proc`` is unavailable)."""

    def __init__(self, interval: float = 0.25):
        self.interval, self.peak = interval, 0

    @staticmethod
    def _tree_pss() -> int:
        parent = {}
        for d in os.listdir('/proc'):
            if d.isdigit():
                try:
                    with open(f'/proc/{d}/stat') as f:
                        parent[int(d)] = int(f.read().rsplit(')', 1)[1].split()[1])
                except OSError:
                    pass
        tree, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            kids = [p for p, pp in parent.items() if pp in frontier and p not in tree]
            tree.update(kids)
            frontier = kids
        total = 0
        for pid in tree:
            try:
                with open(f'/proc/{pid}/smaps_rollup') as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith('Pss:')) * 1024
            except (OSError, StopIteration):
                pass
        return total

    def __enter__(self):
        import threading
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, self._tree_pss())
                self._stop.wait(self.interval)
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def bench_lava_scale(args):
    """The fused Lava runtime (gated) on the shipped Fashion-MNIST model and on
    Spikformer-4-384 (untrained, :func:`untrained_export`) with random CIFAR-shaped
    inputs, at every ``--scale-batches`` B: one batch of B samples (2 at B = 1), its
    samples/s (start-up excluded), start-up, estimated memory against the measured
    peak (:class:`PeakMemory`), the 10,000-image test set extrapolated; logits must
    equal the training-side reference."""
    import tempfile
    from ..deploy import lava_runtime
    from ..deploy.netx_file import read_netx
    from ..deploy.reference import direct_images, reference_run
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'spikformer-4-384.net')
        untrained_export('spikformer-4-384', path)
        models = [('fmnist (' + os.path.basename(args.model) + ')', read_netx(args.model)),
                  ('spikformer-4-384 (untrained)', read_netx(path))]
    print('\n## Lava fused runtime at scale (gated; random inputs of each model\'s shape; start-up excluded '
          'from samples/s; memory: estimate before the run, measured peak PSS of the process tree)')
    print(f'{"model":34s} {"B":>4s} {"samples":>8s} {"samples/s":>10s} {"start-up s":>11s} {"est. MB":>8s} '
          f'{"peak MB":>8s} {"peak/est":>9s} {"10k images":>11s}')
    for label, spec in models:
        for b in args.scale_batches:
            n = max(b, 2)
            images = random_images(spec, n)
            frames = direct_images(images, spec.layers[0].params.get('inputScale', 1))
            ref_logits, _ = reference_run(spec, images)
            with PeakMemory() as mem:
                r = lava_runtime.run(spec, frames, gating=True, batch=b)
            check(r.logits, ref_logits, f'{label} B={b}')
            rate = n / (r.wall_s - r.startup_s)
            est = r.memory['total']
            print(f'{label:34s} {b:4d} {n:8d} {rate:10.1f} {r.startup_s:11.1f} {est / 2**20:8.0f} '
                  f'{mem.peak / 2**20:8.0f} {mem.peak / est:8.2f}x {10000 / rate / 60:9.1f} min', flush=True)


def check(logits, ref, label):
    import numpy as np
    if not np.array_equal(logits, ref):
        raise SystemExit(f'error: {label}: logits differ from the training-side reference')


@dataclass
class BenchmarkConfig:
    """The benchmark's options (``scripts/benchmark.py --help``), same names and defaults."""
    preset: str = 'fmnist'          # training benchmark preset
    batch_size: int = 64            # training batch
    train_steps: int = 10           # timed training steps per round
    rounds: int = 3                 # alternating rounds; the best counts
    threads: int = None             # torch threads (default: torch's)
    model: str = DEFAULT_MODEL      # NetX file for the Lava part
    data_dir: str = None            # dataset folder of the model's data set
    lava_samples: int = 1000        # test images per batched Lava run
    single_samples: int = 50        # test images for the B=1 Lava run
    batch: int = 100                # Lava batch
    stock_steps: int = 200          # Lava steps of the stock NetX comparison
    skip_stock: bool = False
    skip_train: bool = False
    skip_lava: bool = False
    skip_exit: bool = False
    exit_threshold: int = None      # margin threshold (default: results/early-exit's chosen one)
    exit_samples: int = 1000        # test images of the early-exit comparison
    exit_json: str = None           # write the early-exit comparison there (atomically)
    scale: bool = False             # the fused runtime at Spikformer-4-384 scale (bench_lava_scale)
    scale_batches: tuple = (1, 16, 64)   # its Lava batches


def run_benchmark(config: BenchmarkConfig = None):
    """Every part of the benchmark that ``config`` does not skip, each table
    printed as it is measured; exits (``SystemExit``) when a Lava run's logits
    or spikes differ from the reference."""
    args = config or BenchmarkConfig()
    if not args.skip_train:
        bench_training(args)
    if not args.skip_lava:
        bench_lava(args)
    if not args.skip_exit:
        bench_exit(args)
    if not args.skip_stock:
        bench_stock_netx(args)
    if args.scale:
        bench_lava_scale(args)
