#!/usr/bin/env python
"""The Loihi 2 chip budget of every preset, as one markdown table.

    python scripts/loihi_budget.py            # print the table
    python scripts/loihi_budget.py --write    # replace the generated block in docs/loihi.md
    python scripts/loihi_budget.py --check    # exit 1 if docs/loihi.md's block differs

Each preset is built untrained (``torch.manual_seed(0)``, the DTSS gates at their
initial T_max / 2 steps) and planned for ``--build loihi`` (``lava_dtss.deploy.
loihi_build.plan``, gate ``auto``); the budget is ``lava_dtss.deploy.loihi_budget``.
Which layers get a relay gate depends on the weights, so a trained export's
figures differ a little (a relay gate adds its layer's neurons).
"""
import argparse
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, ROOT)
DOC = os.path.join(ROOT, 'docs', 'loihi.md')
BEGIN = '<!-- BEGIN loihi_budget.py (generated: python scripts/loihi_budget.py --write) -->'
END = '<!-- END loihi_budget.py -->'
PRESETS = ('tiny', 'fmnist', 'spikformer-4-384', 'spikformer-8-768')


def table(presets=PRESETS) -> str:
    import torch
    from lava_dtss.deploy.export import model_to_spec
    from lava_dtss.deploy.loihi_budget import budget
    from lava_dtss.deploy.loihi_build import plan
    from lava_dtss.loihi2 import ASSUMED_FIRING_RATE
    from lava_dtss.model import build_model
    lines = ['| preset | P (T_max) | chip neurons | relay gates | cores / chips, convolutions unshared | '
             'cores / chips, shared | attention host bits per step | est. time per step | '
             'est. energy per inference |',
             '|---|---|---|---|---|---|---|---|---|']
    for name in presets:
        torch.manual_seed(0)
        spec = model_to_spec(build_model(name))
        b = budget(plan(spec, spec.t_max))
        lines.append(f'| {name} | {b["period"]} ({spec.t_max}) | {b["neurons"]:,} | {b["relay_gates"]} of '
                     f'{b["gates"]} | {b["cores_unshared"]:,} / {b["chips_unshared"]} | {b["cores_shared"]:,} / '
                     f'{b["chips_shared"]} | {b["attention_bits_per_step"]:,} | {b["step_s"] * 1e6:.1f} us | '
                     f'{b["energy_j"] * 1e6:.1f} uJ |')
    lines.append('')
    lines.append(f'Estimates (not measurements): {ASSUMED_FIRING_RATE:g} spikes per neuron and step assumed, every '
                 'window step counted (no DTSS saving), Loihi 1 per-operation figures, the host attention\'s round '
                 'trip left out of the time.')
    return '\n'.join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with the generated block between the markers set to ``block``."""
    if BEGIN not in text or END not in text:
        raise ValueError(f'{DOC}: the markers {BEGIN!r} and {END!r} are missing')
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f'{head}{BEGIN}\n{block}\n{END}{tail}'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument('--write', action='store_true', help='replace the generated block in docs/loihi.md')
    g.add_argument('--check', action='store_true', help="exit 1 if docs/loihi.md's block is not this output")
    args = p.parse_args(argv)
    block = table()
    if not (args.write or args.check):
        print(block)
        return 0
    with open(DOC) as f:
        text = f.read()
    new = replace_block(text, block)
    if args.check:
        if new != text:
            print(f'error: {DOC}: the budget table differs from scripts/loihi_budget.py; run it with --write',
                  file=sys.stderr)
            return 1
        return 0
    tmp = DOC + '.tmp'
    with open(tmp, 'w') as f:
        f.write(new)
    os.replace(tmp, DOC)
    return 0


if __name__ == '__main__':
    sys.exit(main())
