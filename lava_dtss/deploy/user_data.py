"""A network file on the user's own data (``run_lava.py --input``), its layer
outputs saved (``--save-spikes``): any NetX file runs without a bundled
dataset, and its outputs can be compared with the user's ground truth.

Layouts (``layout``): ``'chw'`` (default) orders the spatial axes as the file's
``shape`` and SLAYER/PyTorch do, ``(C, H, W)``; ``'whc'`` as Lava's and NetX's
processes do, ``(W, H, C)`` (lava-dl's own ground-truth arrays, e.g.
``gts/pilotnet_lif/input.npy``). Time is the last axis.

- input data: ``[C, H, W, T]`` (or ``[N, T]`` with ``N = C*H*W`` flattened in
  ``(C, H, W)`` order, the form of a dense input), optionally with a leading
  sample axis ``[S, ..., T]``: samples run back to back (sample ``s`` at Lava
  steps ``s*T + 1 .. s*T + T``), as one stream in stock NetX timing.
- input bias (a file whose input layer has a neuron): ``[C, H, W]`` / ``[N]``
  or one per sample ``[S, ...]``, integers (bias mantissa).
- saved outputs: per layer ``[C, H, W, K]`` / ``[N, K]``, 0/1, its output at
  Lava steps ``1 .. K``. Stock timing: ``K = S*T + D`` (``D``: the conv and
  dense layers, the steps the last sample needs to pass the pipeline); the
  first ``S*T`` steps are what stock NetX records in a run of ``S*T`` steps.
  Layer-synchronous timing (our files, imported NIR graphs): ``K = S*T``,
  step ``s*T + t`` is sample ``s`` at window step ``t``, every layer in the
  same step (the file's own timing).
"""
from __future__ import annotations

import os

import numpy as np

from .netx_file import NetSpec

LAYOUTS = ('chw', 'whc')


class InputError(ValueError):
    """User data (``--input``, ``--input-bias``) that cannot drive the network."""


def load_array(path: str, what: str) -> np.ndarray:
    """A finite numeric array from a ``.npy`` file, or :class:`InputError` (one line)."""
    if not os.path.isfile(path):
        raise InputError(f'{what} {path}: no such file (expected a NumPy .npy array)')
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f'{what} {path}: not a NumPy .npy array ({" ".join(str(e).split())})') from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f'{what} {path}: holds several arrays (.npz); expected one .npy array')
    if arr.dtype.kind not in 'biuf':
        raise InputError(f'{what} {path}: dtype {arr.dtype}, expected numbers')
    arr = arr.astype(float)
    if not np.all(np.isfinite(arr)):
        raise InputError(f'{what} {path}: holds NaN or infinite values')
    return arr


def _to_chw(a: np.ndarray, lead: int, layout: str) -> np.ndarray:
    """Swap ``(W, H, C)`` at axes ``lead .. lead+2`` to ``(C, H, W)`` for ``layout='whc'``."""
    if layout == 'chw' or a.ndim < lead + 3:
        return a
    order = list(range(a.ndim))
    order[lead:lead + 3] = [lead + 2, lead + 1, lead]
    return a.transpose(order)


def to_layout(a: np.ndarray, layout: str) -> np.ndarray:
    """An output ``[C, H, W, K]`` (or ``[N, K]``) in ``layout``."""
    return a if layout == 'chw' or a.ndim < 4 else a.transpose(2, 1, 0, *range(3, a.ndim))


def shape_input(spec: NetSpec, data: np.ndarray, layout: str, path: str, what: str = '--input',
                timed: bool = True) -> np.ndarray:
    """``data`` as ``[S, *input shape, T]`` (``timed``) or ``[S, *input shape]``
    in ``(C, H, W)`` order, or :class:`InputError` naming the accepted shapes."""
    shape = tuple(spec.layers[0].shape)
    n = int(np.prod(shape))
    t = ('T',) if timed else ()
    space = (('C', 'H', 'W') if layout == 'chw' else ('W', 'H', 'C')) if len(shape) == 3 else ('N',)
    given = shape if layout == 'chw' else shape[::-1]
    forms = [given, (n,)] if len(shape) == 3 else [given]
    for lead in (0, 1):
        for form in forms:
            nd = lead + len(form) + len(t)
            if data.ndim == nd and tuple(data.shape[lead:lead + len(form)]) == form and min(data.shape) > 0:
                a = data if lead else data[None]
                if len(form) == 3:
                    a = _to_chw(a, 1, layout)
                return np.ascontiguousarray(a.reshape((a.shape[0],) + shape + a.shape[len(form) + 1:]))
    tail = ', T' if timed else ''
    expect = f'[{", ".join(f"{a}={v}" for a, v in zip(space, given))}{tail}]'
    if len(shape) == 3:
        expect += f' or [N={n}{tail}]'
    raise InputError(f'{what} {path}: shape {tuple(data.shape)} does not fit the network\'s input '
                     f'{tuple(shape)} (C, H, W): expected {expect} ({layout} layout, --layout), '
                     'optionally with a leading sample axis')


def run_input(model: str, input_path: str = None, *, input_bias_path: str = None, layout: str = 'chw',
              t_max: int = None, num_layers: int = None, skip_input_neuron: bool = False,
              timing: str = 'auto', reset_interval: int = 0, reset_offset: int = 0,
              input_message_bits: int = 0, save_layers=None, save_voltages: bool = False,
              backend: str = 'cpu',
              max_memory: int = None, command: str = '', log=None):
    """Run ``model`` in Lava on the user's data: ``input_path`` (see the module
    docstring) and/or, for an input layer with a neuron, ``input_bias_path``
    (then without ``input_path`` the input is zero for ``t_max`` steps per
    bias sample). ``save_layers``: names of the layers whose outputs are
    recorded at every step (``'all'``, ``'last'``, a list of names, or None: none);
    ``save_voltages``: their voltages too (``LavaResult.voltages``).

    Everything is checked before any Lava process starts. Returns ``(report,
    result, spec)``: the JSON-able report, the :class:`LavaResult` (its
    ``spikes`` ``[K, *shape]`` in ``(C, H, W)`` order) and the network read."""
    from . import lava_runtime
    from .netx_file import read_netx
    if layout not in LAYOUTS:
        raise InputError(f'layout {layout!r}: expected one of {", ".join(LAYOUTS)}')
    if input_path is None and input_bias_path is None:
        raise InputError('no input: pass --input FILE.npy and/or --input-bias FILE.npy')
    log = log or (lambda line: print(line, flush=True))
    spec = read_netx(model, skip_input_neuron=skip_input_neuron, num_layers=num_layers)
    timing = lava_runtime.timing_of(spec, timing)
    if not any(l.type not in ('input', 'flatten') or l.neuron for l in spec.layers):
        raise InputError(f'{model}: the first {len(spec.layers)} layer(s) hold no neuron to run; '
                         'raise --num-layers')
    bias = None
    if input_bias_path is not None:
        if not spec.layers[0].neuron:
            raise InputError(f'--input-bias {input_bias_path}: {model} has no input layer with a neuron '
                             '(a bias drives the neuron of stock NetX\'s Input block)'
                             + (' and --skip-input-neuron drops it' if skip_input_neuron else ''))
        bias = shape_input(spec, load_array(input_bias_path, '--input-bias'), layout, input_bias_path,
                           '--input-bias', timed=False)
        if np.any(bias != np.round(bias)) or np.abs(bias).max() >= 1 << 15:
            raise InputError(f'--input-bias {input_bias_path}: expected integers in -32768..32767 '
                             '(the bias mantissa of Lava\'s LIF)')
    if input_path is not None:
        frames = shape_input(spec, load_array(input_path, '--input'), layout, input_path)
        if t_max is not None and t_max != frames.shape[-1]:
            raise InputError(f'--t-max {t_max} differs from the {frames.shape[-1]} steps of --input '
                             f'{input_path} (its last axis)')
        if bias is not None and bias.shape[0] not in (1, frames.shape[0]):
            raise InputError(f'--input-bias {input_bias_path} holds {bias.shape[0]} samples, --input '
                             f'{input_path} {frames.shape[0]}: expected one bias or one per sample')
    else:
        if t_max is None:
            raise InputError('--input-bias without --input needs --t-max (time steps per sample)')
        frames = np.zeros((bias.shape[0],) + tuple(spec.layers[0].shape) + (t_max,))
    if (timing == 'stock' and not spec.layers[0].neuron and input_message_bits
            and np.any(frames != np.round(frames))):
        raise InputError(f'--input {input_path}: graded input (--input-message-bits '
                         f'{input_message_bits}) must hold integers')
    if input_path is not None:
        check_input_values(spec, frames, timing, input_message_bits, input_path)
    names = [l.name for l in spec.layers if l.type in ('conv', 'dense') or (l.type == 'input' and l.neuron)]
    if save_layers in ('all', 'last'):
        record = names if save_layers == 'all' else names[-1:]
    else:
        record = list(save_layers or [])
        unknown = [n for n in record if n not in names]
        if unknown:
            raise InputError(f'--save-layers {",".join(unknown)}: no such layer with neurons in {model}; '
                             f'its layers: {", ".join(names)}')
    samples, steps = frames.shape[0], frames.shape[-1]
    log(f'running {samples} sample(s) x {steps} steps of {input_path or "zero input"} on Lava '
        f'({backend}, {timing} timing) ...')
    res = lava_runtime.run(spec, frames, backend=backend, max_memory=max_memory, timing=timing,
                           reset_interval=reset_interval, reset_offset=reset_offset,
                           input_bias=bias, input_message_bits=input_message_bits, record=tuple(record),
                           record_voltage=tuple(record) if save_voltages else ())
    layers = {n: {'spikes': int(res.fingerprints[n][:, 0].sum()), 'synops': res.synops[n],
                  'neuron_updates': res.neuron_updates[n]} for n in res.fingerprints}
    report = {'model': model, 'input': input_path, 'input_bias': input_bias_path, 'layout': layout,
              'num_samples': samples, 'steps_per_sample': steps, 'timing': timing,
              'lava_steps': res.num_steps, 'processes': res.processes, 'backend': backend,
              'num_layers': len(spec.layers), 'layers': layers,
              'spike_counts': res.logits.astype(int).tolist(),
              'wall_s': round(res.wall_s, 3), 'startup_s': round(res.startup_s, 3), 'command': command}
    return report, res, spec


def check_input_values(spec: NetSpec, frames: np.ndarray, timing: str, input_message_bits: int = 0,
                       path: str = 'input'):
    """:class:`InputError` (one line) for input values the network's first layer
    cannot take as documented (issue 26: negative and huge values were run):

    - an input neuron (stock NetX's Input block): synaptic input, truncated to
      integers, ``|x| < 2**23`` (Loihi's 24-bit current);
    - stock timing, unary (``input_message_bits = 0``): ``0`` no spike, ``> 0`` a
      spike; negative values are refused;
    - stock timing, graded (``input_message_bits = B``): integers with
      ``|x| <= 2**B - 1``;
    - layer-synchronous (our files, imported NIR graphs): the integer input
      ``round(inputScale * x)`` of data ``x`` in [0, 1]: integers ``0..inputScale``."""
    lo, hi = float(frames.min()), float(frames.max())
    found = f'found values {lo:g}..{hi:g}'
    if spec.layers[0].neuron:
        if max(abs(lo), abs(hi)) >= 1 << 23:
            raise InputError(f'--input {path}: the input neuron\'s synaptic input must stay within '
                             f'|x| < 2**23 (24-bit current); {found}')
        return
    if timing == 'stock':
        if not input_message_bits:
            if lo < 0:
                raise InputError(f'--input {path}: unary input (stock NetX) takes 0 (no spike) or a positive '
                                 f'value (a spike), {found}; for signed graded values pass '
                                 '--input-message-bits B')
            return
        top = (1 << int(input_message_bits)) - 1
        if max(abs(lo), abs(hi)) > top:
            raise InputError(f'--input {path}: graded input of {input_message_bits} bits carries '
                             f'|x| <= {top}; {found} (raise --input-message-bits)')
        return
    scale = int(spec.layers[0].params.get('inputScale', 1))
    if 'nir' in spec.meta and scale > 1 and lo == 0 and hi == 1 and np.all((frames == 0) | (frames == 1)):
        raise InputError(f'--input {path}: holds only 0 and 1 (spikes or events?), but this file imported from '
                         f'NIR takes round({scale} x) of data x in [0, 1]: an event would count 1/{scale} and the '
                         'network stay silent; import the graph again with --input-scale 1 for spike or event '
                         f'input (or send {scale} for a full-scale value)')
    if lo < 0 or hi > scale or np.any(frames != np.round(frames)):
        raise InputError(f'--input {path}: this file (layer-synchronous) takes integers 0..{scale}, '
                         f'round({scale} x) of data x in [0, 1] (its inputScale); {found}'
                         + ('' if np.all(frames == np.round(frames)) else ', not all integers')
                         + (f': multiply data in [0, 1] by {scale} and round' if 0 <= lo and hi <= 1 else ''))


def save_spikes(path: str, spikes: dict, layout: str = 'chw', what: str = '--save-spikes'):
    """Write recorded outputs or voltages (``{name: [K, *shape]}``) atomically:
    ``.npy`` one layer ``[*shape, K]``; ``.npz`` one array per layer name."""
    from ..training.checkpoints import atomic_write
    arrays = {n: to_layout(np.moveaxis(a, 0, -1), layout) for n, a in spikes.items()}
    if path.endswith('.npz'):
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    elif path.endswith('.npy'):
        if len(arrays) != 1:
            raise InputError(f'{what} {path}: {len(arrays)} layers need a .npz file (one array '
                             'per layer)')
        atomic_write(path, lambda f: np.save(f, next(iter(arrays.values()))))
    else:
        raise InputError(f'{what} {path}: expected a .npy (one layer) or .npz file name')
