#!/usr/bin/env python
"""Training throughput of a preset with the project's fused CUBA neuron and with
stock SLAYER CUBA (``slayer.neuron.cuba.Neuron``, the neuron of
``slayer.block.cuba``), side by side in one run, same weights, same batches.

    python scripts/benchmark_neuron.py                    # fmnist preset, batch 64
    python scripts/benchmark_neuron.py --preset tiny --batch-size 128

Prints samples/s (forward + backward + optimiser step) for both, their ratio,
whether the spikes of every layer were identical, and the projected time of one
60,000-image epoch.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import torch  # noqa: E402

from lava_dtss.model import build_model  # noqa: E402


def step_fn(model, x, y, opt):
    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return step


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--preset', default='fmnist')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--steps', type=int, default=10, help='timed steps per implementation and round')
    p.add_argument('--rounds', type=int, default=3, help='alternating rounds (the best is reported)')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fast = build_model(args.preset, neuron_impl='fast')
    stock = build_model(args.preset, neuron_impl='stock')
    stock.load_state_dict(fast.state_dict())
    cfg = fast.cfg
    x = torch.rand(args.batch_size, cfg.in_channels, cfg.image_size, cfg.image_size)
    y = torch.randint(0, cfg.num_classes, (args.batch_size,))

    # identical spikes in every layer (same weights, eval-mode BatchNorm)
    outs = {}
    for name, model in (('fast', fast), ('stock', stock)):
        model.eval()
        with torch.no_grad():
            outs[name] = model.forward_with_spikes(x)[1]
        model.train()
    identical = all(torch.equal(outs['fast'][n], outs['stock'][n]) for n in outs['fast'])

    best = {}
    steps = {n: step_fn(m, x, y, torch.optim.AdamW(m.parameters(), 1e-3))
             for n, m in (('fast', fast), ('stock', stock))}
    for fn in steps.values():
        fn()  # warm-up
    for _ in range(args.rounds):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            rate = args.steps * args.batch_size / (time.perf_counter() - t0)
            best[name] = max(best.get(name, 0.0), rate)
    print(f'preset {args.preset}, batch {args.batch_size}, T={cfg.t_max}, '
          f'{torch.get_num_threads()} torch threads')
    print(f'{"neuron":34s} {"samples/s":>10s} {"60k-image epoch":>16s}')
    for name, label in (('stock', 'stock slayer.neuron.cuba.Neuron'), ('fast', 'lava_dtss FastCubaNeuron')):
        print(f'{label:34s} {best[name]:10.1f} {60000 / best[name] / 60:13.1f} min')
    print(f'speed-up (fast / stock): {best["fast"] / best["stock"]:.2f}x; '
          f'spikes of every layer identical: {identical}')
    return 0 if identical else 1


if __name__ == '__main__':
    sys.exit(main())
