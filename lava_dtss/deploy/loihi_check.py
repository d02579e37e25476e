"""Static check of a network file against Loihi 2's limits (no hardware needed).

Limits (``lava_dtss.loihi2``, with their sources): 8-bit weights (signed, with
a shared exponent), 24-bit u/v state, 12-bit decays, 13-bit bias mantissa,
17-bit threshold mantissa (<< 6), delays <= 62. Core estimate: a neuro core
holds at most ``NEURONS_PER_CORE`` neurons and ``SYNAPSES_PER_CORE`` 8-bit
synapses (128 KiB of synaptic memory); the estimate is the larger of the two
bounds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..loihi2 import (ACT_SHIFT, BIAS_EXP, BIAS_MANT_BITS, CORES_PER_CHIP, DECAY_BITS, DECAY_UNITY, I_DECAY_RANGE, MAX_BIAS,
                      MAX_BIAS_EXP, MAX_UV, MAX_VTH, MIN_BIAS, NEURONS_PER_CORE, STATE_BITS, STATE_SCALE, SYNAPSES_PER_CORE,
                      V_DECAY_RANGE,
                      VTH_MANT_BITS,
                      WEIGHT_MANTISSA_BITS, bias_split, graded_bits, state_overflow, weight_mantissa_bits,
                      worst_input)
from .netx_file import NetSpec

# the decays: what Loihi 2's 12-bit du, dv encode (iDecay = du + 1, vDecay = dv), not the files' 0..4096
LIMITS = {'vThMant': (0, MAX_VTH), 'bias': (MIN_BIAS, MAX_BIAS), 'iDecay': I_DECAY_RANGE, 'vDecay': V_DECAY_RANGE}


@dataclass
class LayerCheck:
    name: str
    type: str
    neurons: int = 0
    synapses: int = 0
    weight_bits: int = 0
    max_state: int = 0
    cores: int = 0
    current_wrap: str = ''     # why the 24-bit current may wrap (also in violations); '' when it cannot
    violations: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def check_network(spec: NetSpec) -> list:
    """One ``LayerCheck`` per layer with its violations of the limits."""
    from .netx_file import require_plain
    require_plain(spec, '--check-loihi')
    checks = []
    max_in = {0: int(spec.layers[0].params.get('inputScale', 1))}  # max input value per layer
    for i, layer in enumerate(spec.layers):
        c = LayerCheck(layer.name, layer.type)
        if layer.type == 'input':
            c.notes.append(f'inputs up to {max_in[0]} ({graded_bits(max_in[0])}-bit graded spikes)')
            checks.append(c)
            continue
        if layer.type == 'flatten':
            max_in[i] = max_in[layer.inputs[0]]
            continue
        src_max = sum(max_in.get(j, 1) for j in layer.inputs)
        c.neurons = int(np.prod(layer.shape))
        p = layer.params
        if layer.type in ('conv', 'dense', 'readout'):
            w = np.asarray(p['weight'])
            c.weight_bits = weight_mantissa_bits(w)
            if c.weight_bits > WEIGHT_MANTISSA_BITS and layer.type != 'readout':
                c.violations.append(f'weights in [{w.min()}, {w.max()}] need a {c.weight_bits}-bit '
                                    f'mantissa (Loihi 2: {WEIGHT_MANTISSA_BITS} bits with a shared exponent)')
            fan_in = int(np.prod(w.shape[1:]))
            c.synapses = c.neurons * fan_in if layer.type != 'readout' else int(w.size)
            c.max_state = int(worst_input(w, src_max)) << ACT_SHIFT
            b = np.asarray(p.get('bias', np.zeros(1)))
            max_bias = float(np.abs(b).max(initial=0))
            if layer.type != 'readout':
                split = bias_split(b)
                if split is None:
                    blo, bhi = LIMITS['bias']
                    c.violations.append(f'bias in [{b.min()}, {b.max()}] exceeds the {BIAS_MANT_BITS}-bit mantissa '
                                        f'[{blo}, {bhi}] at every bias_exp {BIAS_EXP}..{MAX_BIAS_EXP} (beyond it, '
                                        'bias_exp 7 needs every bias of the layer even)')
                elif split[1] != BIAS_EXP:
                    c.notes.append(f'bias_exp {split[1]}: bias mantissas in [{split[0].min()}, {split[0].max()}]')
        elif layer.type == 'attention':
            c.synapses = 0
            max_bias = 0.0
            d = layer.shape[0] // p['heads']
            tokens = int(np.prod(layer.shape[1:]))
            c.max_state = int(p['weight'] * tokens * d) << ACT_SHIFT
            c.notes.append('q (k^T v) multiplies two activations: no fixed synapse; on Loihi 2 it '
                           'needs programmable-neuron microcode or the embedded CPU')
        if layer.type == 'readout':
            c.notes.append('readout runs on the host (spike-count accumulation)')
        if layer.neuron:
            n = layer.neuron
            vlo, vhi = LIMITS['vThMant']
            if not vlo <= n['vThMant'] <= vhi:
                c.violations.append(f'vThMant {n["vThMant"]} exceeds {VTH_MANT_BITS} bits [{vlo}, {vhi}]')
            for k in ('iDecay', 'vDecay'):
                dlo, dhi = LIMITS[k]
                if not dlo <= n[k] <= dhi:
                    c.violations.append(f'{k} {n[k]} outside [{dlo}, {dhi}], the range of the {DECAY_BITS}-bit '
                                        f'{"du (iDecay - 1)" if k == "iDecay" else "dv (vDecay)"} of Loihi 2')
            if (n['vThMant'] << ACT_SHIFT) >= MAX_UV:
                c.violations.append(f'threshold vThMant << {ACT_SHIFT} = {n["vThMant"] << ACT_SHIFT} does not fit '
                                    f'the {STATE_BITS}-bit voltage (< {MAX_UV})')
            current, voltage = state_overflow(c.max_state >> ACT_SHIFT, max_bias, n['iDecay'], n['vDecay'])
            if current:
                c.current_wrap = current
                c.violations.append(current)
            if voltage:
                c.notes.append(voltage)
        c.cores = max(math.ceil(c.neurons / NEURONS_PER_CORE), math.ceil(c.synapses / SYNAPSES_PER_CORE), 1) \
            if layer.type != 'readout' else 0
        max_in[i] = 1
        checks.append(c)
    return checks


def format_report(checks: list) -> str:
    lines = [f'{"layer":24s} {"type":9s} {"neurons":>8s} {"synapses":>10s} {"w bits":>6s} '
             f'{"max |u|":>9s} {"cores":>5s}  status']
    for c in checks:
        status = 'OK' if not c.violations else 'VIOLATION: ' + '; '.join(c.violations)
        lines.append(f'{c.name:24s} {c.type:9s} {c.neurons:8d} {c.synapses:10d} {c.weight_bits:6d} '
                     f'{c.max_state:9d} {c.cores:5d}  {status}')
        for note in c.notes:
            lines.append(f'{"":24s} note: {note}')
    cores = sum(c.cores for c in checks)
    lines.append(f'estimated cores: {cores} (a Loihi 2 chip has {CORES_PER_CHIP}); '
                 f'{"fits one chip" if cores <= CORES_PER_CHIP else f"needs {math.ceil(cores / CORES_PER_CHIP)} chips"}')
    return '\n'.join(lines)


def check_file(model: str, *, build: str = 'fused', t_max: int = None, skip_input_neuron: bool = False,
               log=print) -> list:
    """``run_lava.py --check-loihi``: the limits report of the network file
    ``model`` (:func:`format_report`), and with ``build='loihi'`` the resource
    report of its standard-process build, each given to ``log`` as it is made.
    Returns the layers that violate a limit (``LayerCheck`` with ``violations``)."""
    from .netx_file import read_netx
    spec = read_netx(model, skip_input_neuron=skip_input_neuron)
    checks = check_network(spec)
    log(format_report(checks))
    if build == 'loihi':
        from . import loihi_build
        t_max = spec.t_max or t_max
        if t_max is None:
            raise ValueError(f'{model} does not store T_max (a stock NetX file): pass --t-max')
        log('\n' + loihi_build.format_resources(loihi_build.plan_for(spec, t_max, model)))
    return [c for c in checks if c.violations]


def refuse_current_wrap(spec: NetSpec, source: str):
    """``ValueError`` (one line, naming ``source`` and the layer) for a file of
    ours whose worst-case synaptic current passes Loihi 2's 24 bits: Lava would
    wrap it where training-side inference does not, so a run could only end in
    "Lava differs". Checked before any data is loaded, for every build."""
    for i, c in enumerate(check_network(spec)):
        if c.current_wrap:
            raise ValueError(f"{source}: layer {i} ({c.type} {c.name!r}): {c.current_wrap}; Lava wraps "
                             'it, training-side inference does not (re-export the checkpoint: the export '
                             'keeps the current inside 24 bits)')


def measured_state(spec: NetSpec, images, batch_size: int = 16) -> dict:
    """Per gated layer of a file of ours, the largest ``|u|`` (synaptic current)
    and ``|v|`` (voltage before reset) that training-side inference reaches on
    ``images [S, C, H, W]`` (in [0, 1]) over the layer's active steps, in state
    units (``a_in << 6``): ``{layer: {'max_u', 'max_v', 'clips'}}``. ``clips``:
    ``max_v`` reaches Loihi 2's voltage clip ``2**23 - 1`` (or ``max_u`` its
    current wrap ``2**23``), where Lava's state differs from training's. Steps
    after ``T_l`` are left out: their spikes are gated off and the state resets
    before the next window, so a clip there changes nothing."""
    import torch
    from ..model.neuron import cuba_forward
    from .export import deployed_model
    model = deployed_model(spec, torch.float64)
    steps = {layer.name: layer.active_steps for layer in spec.layers}
    out, hooks = {}, []

    def hook(name, neuron):
        def pre(module, args, kwargs):
            x, bias = args[0], kwargs.get('bias', args[1] if len(args) > 1 else None)
            du, dv = int(module.cx_current_decay), int(module.cx_voltage_decay)
            _, volt = cuba_forward(x, du, dv, module.threshold, bias)
            k = min(steps.get(name) or x.shape[-1], x.shape[-1])
            u = (x[..., :k].abs() * STATE_SCALE).max() if du == DECAY_UNITY else None
            rec = out.setdefault(name, {'max_u': 0, 'max_v': 0})
            rec['max_v'] = max(rec['max_v'], int(volt[..., :k].abs().max()))
            if u is not None:
                rec['max_u'] = max(rec['max_u'], int(u))
        return neuron.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        for name, m in model.gated_layers():
            hooks.append(hook(name, m.neuron))
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                model(torch.as_tensor(images[start:start + batch_size], dtype=torch.float64))
    finally:
        for h in hooks:
            h.remove()
    for rec in out.values():
        rec['clips'] = rec['max_v'] >= MAX_UV - 1 or rec['max_u'] >= MAX_UV
    return out


def format_measured_state(measured: dict, checks: list = None) -> str:
    """One line per layer: measured ``max |u|``, ``max |v|`` against the 24-bit
    state (and the static worst case of :func:`check_network` where given)."""
    worst = {c.name: c for c in checks or []}
    lines = [f'{"layer":24s} {"max |u|":>9s} {"max |v|":>9s} {"of 2**23":>8s}  {"worst |u|":>9s}  status']
    for name, rec in measured.items():
        c = worst.get(name)
        lines.append(f'{name:24s} {rec["max_u"]:9d} {rec["max_v"]:9d} {rec["max_v"] / MAX_UV:8.3f}  '
                     f'{c.max_state if c else 0:9d}  {"CLIPS" if rec["clips"] else "no clipping"}')
    return '\n'.join(lines)
