"""Training health of a spiking ViT checkpoint: what each LIF layer does while
the optimiser sees it, and how far the fixed-point export is from it.

Per gated layer (``[N, C, H, W, T]`` spikes, time last), on a batch of training
images in train mode:

- ``firing_rate``: spikes per neuron per time step;
- ``never_fire`` / ``always_fire``: fraction of neurons (channel x position)
  that never fire / fire at every step of every image;
- ``surrogate_active``: fraction of neuron-steps whose surrogate derivative is
  above 10% of its peak, ``|v - theta| < tau_rho ln 10`` (SLAYER's
  ``exp(-|v - theta| / tau_rho)``);
- ``current_mean`` / ``current_std``: the input current after BatchNorm, SLAYER
  units (the threshold is ``threshold``, or ``attn_threshold`` for attention);
- ``grad_out_rms``: RMS of d(batch loss)/d(output spikes);
- ``weight_grad_rel``: |dL/dW| / |W| of the layer's synapse (None: no weights).

With ``export=True``, also the float model against its own NetX export on
validation images: both accuracies and, per layer, the fraction of spikes they
agree on (cumulative: a layer inherits its inputs' differences).
"""
from __future__ import annotations

import math
import os
import tempfile

import torch
from lava.lib.dl.slayer.neuron import cuba

from ..loihi2 import STATE_SCALE
from ..model.neuron import FastCubaNeuron, cuba_forward
from ..model.vit import SpikingViT

SURROGATE_FRACTION = 0.1   # "active" surrogate: above this fraction of its peak


def layer_health(model: SpikingViT, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """``{'loss', 'accuracy', 'layers': {name: stats}}`` of one train-mode forward
    and backward pass on ``images [N, C, H, W]`` with ``labels [N]`` (the model's
    gradients are left set)."""
    currents, spikes = {}, {}

    def keep_current(name):
        def hook(mod, inputs, out):
            currents[name] = inputs[0].detach()
        return hook

    def keep_spikes(name):
        def hook(mod, inputs, out):
            if out.requires_grad:
                out.retain_grad()
            spikes[name] = out
        return hook
    layers = model.gated_layers()
    hooks = [m.neuron.register_forward_hook(keep_current(n)) for n, m in layers
             if isinstance(m.neuron, FastCubaNeuron)]
    hooks += [m.register_forward_hook(keep_spikes(n)) for n, m in layers]
    was_training = model.training
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        logits = model(images)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    rows = {}
    for name, m in layers:
        s = spikes[name].detach()
        per_neuron = s.mean(dim=(0, -1))    # [C, H, W]: rate over images and steps
        row = {'firing_rate': float(s.mean()),
               'never_fire': float((per_neuron == 0).double().mean()),
               'always_fire': float((per_neuron == 1).double().mean())}
        if name in currents:
            z, neuron = currents[name], m.neuron
            _, volt = cuba_forward(z, int(neuron.cx_current_decay), int(neuron.cx_voltage_decay),
                                   neuron.threshold)
            width = neuron.tau_rho * cuba.TAU_RHO_MULT * STATE_SCALE * math.log(1 / SURROGATE_FRACTION)
            row['surrogate_active'] = float(((volt - neuron.threshold * STATE_SCALE).abs() < width).double().mean())
            row['current_mean'], row['current_std'] = float(z.mean()), float(z.std())
        grad = spikes[name].grad
        row['grad_out_rms'] = None if grad is None else float(grad.pow(2).mean().sqrt())
        synapse = getattr(m, 'synapse', None)
        if synapse is not None and synapse.weight.grad is not None:
            row['weight_grad_rel'] = float(synapse.weight.grad.norm() / synapse.weight.norm())
        else:
            row['weight_grad_rel'] = None
        rows[name] = row
    accuracy = float((logits.argmax(1) == labels).double().mean())
    return {'loss': float(loss), 'accuracy': accuracy, 'layers': rows}


@torch.no_grad()
def export_agreement(model: SpikingViT, images: torch.Tensor, labels: torch.Tensor,
                     dataset: str = '') -> dict:
    """Float model against its fixed-point NetX export on ``images``:
    ``{'float_accuracy', 'fixed_accuracy', 'spikes_equal': {layer: fraction}}``."""
    from ..deploy.export import deployed_model, export_hdf5
    was_training = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, 'model.net')
            export_hdf5(model, path, dataset=dataset)
            deployed = deployed_model(path)
        float_logits, float_spikes = model.forward_with_spikes(images)
        fixed_logits, fixed_spikes = deployed.forward_with_spikes(images.double())
    finally:
        model.train(was_training)
    return {'float_accuracy': float((float_logits.argmax(1) == labels).double().mean()),
            'fixed_accuracy': float((fixed_logits.argmax(1) == labels).double().mean()),
            'spikes_equal': {n: float((float_spikes[n].double() == fixed_spikes[n]).double().mean())
                             for n in float_spikes}}


def format_health(report: dict) -> str:
    """The report of :func:`layer_health` (and ``export`` if present) as a text table."""
    lines = [f'batch loss {report["loss"]:.4f}, accuracy {report["accuracy"]:.4f}',
             f'{"layer":20s} {"rate":>6s} {"never":>6s} {"always":>6s} {"surr":>6s} {"I mean":>7s} '
             f'{"I std":>6s} {"dL/ds":>9s} {"|gW|/|W|":>9s}' + (' equal' if 'export' in report else '')]
    for n, r in report['layers'].items():
        def f(key, fmt):
            return format(r[key], fmt) if r.get(key) is not None else '-'.rjust(len(format(0.0, fmt)))
        line = (f'{n:20s} {f("firing_rate", "6.3f")} {f("never_fire", "6.3f")} {f("always_fire", "6.3f")} '
                f'{f("surrogate_active", "6.3f")} {f("current_mean", "7.3f")} {f("current_std", "6.3f")} '
                f'{f("grad_out_rms", "9.2e")} {f("weight_grad_rel", "9.2e")}')
        if 'export' in report:
            line += f' {report["export"]["spikes_equal"][n]:.4f}'
        lines.append(line)
    if 'export' in report:
        e = report['export']
        lines.append(f'validation: float {e["float_accuracy"]:.4f}, fixed point {e["fixed_accuracy"]:.4f} '
                     f'({e["images"]} images)')
    return '\n'.join(lines)


def _override_items(command: str) -> list:
    """The settings a run changed from the preset's defaults, from its command line
    (``['--fixed-t 4', '--ann', '--config attn_threshold=2.0', ...]``)."""
    words = command.split()
    keep = []
    for i, w in enumerate(words):
        if w in ('--config', '--lr', '--epochs', '--fixed-t', '--ann', '--batch-size', '--weight-decay', '--augment'):
            keep.append(w if w == '--ann' else f'{w} {words[i + 1]}')
    return keep


def _overrides(command: str) -> str:
    """:func:`_override_items` as one string."""
    return ' '.join(_override_items(command))


def _runs(folder: str):
    """``(name, metrics, last log entry, export card or None)`` of every run under ``folder``."""
    import json
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name, 'metrics.json')
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            m = json.load(f)
        with open(os.path.join(folder, name, 'log.jsonl')) as f:
            last = [json.loads(line) for line in f if line.strip()][-1]
        card = None
        if os.path.isfile(os.path.join(folder, name, 'export.json')):   # scripts/export_netx.py's card
            with open(os.path.join(folder, name, 'export.json')) as f:
                card = json.load(f)
        yield name, m, last, card


def levers_markdown(folder: str) -> str:
    """Markdown tables of every run under ``folder`` (``<run>/metrics.json`` and
    ``log.jsonl`` of scripts/train_slayer.py; ``export.json``, the card of
    ``scripts/export_netx.py``, where the run was exported), in name order: what it
    changed, its last epoch's training accuracy, validation accuracy, test accuracy
    (listed for completeness, never used to choose) and the exported fixed-point
    model's test accuracy; then every setting run with several seeds, as mean and
    standard deviation over its seeds, beside the ANN twin of the same settings."""
    import statistics
    rows = ['| run | settings (beyond the preset) | seed | epochs | train acc | val acc | test acc '
            '| fixed-point test acc |', '|---|---|---|---|---|---|---|---|']
    groups = {}
    runs = list(_runs(folder))
    if not runs:   # an empty table with exit 0 said nothing (issue 26)
        raise ValueError(f'{folder} holds no run folder with a metrics.json and log.jsonl of '
                         'scripts/train_slayer.py; pass the folder whose subfolders are the runs')
    for name, m, last, card in runs:
        q = card.get('quantized_test_accuracy') if card else None
        items = _override_items(m.get('command', ''))
        rows.append(f'| {name} | `{" ".join(items)}` | {m.get("seed", 0)} | {m["epochs"]} | '
                    f'{100 * last["train_acc"]:.2f}% | {100 * m["val_accuracy"]:.2f}% | '
                    f'{100 * m["test_accuracy"]:.2f}% | {"" if q is None else f"{100 * q:.2f}%"} |')
        groups.setdefault(frozenset(items), (' '.join(items), []))[1].append((m, q))
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0   # noqa: E731
    seeded = [(items, k, g) for items, (k, g) in groups.items() if len(g) > 1]
    if seeded:
        rows += ['', '| settings | seeds | val acc | test acc | fixed-point test acc | ANN twin test acc '
                 '| gap to the twin (test) |', '|---|---|---|---|---|---|---|']
        for items, k, g in seeded:
            val, test = [m['val_accuracy'] for m, _ in g], [m['test_accuracy'] for m, _ in g]
            fp = [q for _, q in g if q is not None]
            twin_items = frozenset(i for i in items if not i.startswith('--fixed-t ')) | {'--ann'}
            twin = [m['test_accuracy'] for m, _ in groups.get(twin_items, ('', []))[1]]
            rows.append(f'| `{k}` | {len(g)} | {100 * statistics.mean(val):.2f} +- {100 * sd(val):.2f}% '
                        f'| {100 * statistics.mean(test):.2f} +- {100 * sd(test):.2f}% '
                        + (f'| {100 * statistics.mean(fp):.2f} +- {100 * sd(fp):.2f}% ({len(fp)}) ' if fp else '| ')
                        + (f'| {100 * statistics.mean(twin):.2f}% | {100 * (statistics.mean(test) - statistics.mean(twin)):+.2f} pp |'
                           if twin else '| | |'))
    return '\n'.join(rows)
