"""Build Lava processes from a network file (ours or stock NetX) and run them
on the Lava CPU simulator (``Loihi2SimCfg(select_tag='fixed_pt')``), one
sample per window of ``t_max`` steps, back to back.

Every run is stopped on every path (errors and Ctrl-C included).
"""
from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .netx_file import NetSpec

INRC_MESSAGE = (
    'the Loihi 2 backend needs lava-loihi, which Intel distributes to members of its '
    'Neuromorphic Research Community (INRC) only; see https://intel-ncl.atlassian.net/wiki/'
    'spaces/INRC/overview (join the INRC, then install lava-loihi in this virtual environment '
    'and run on an INRC Loihi 2 system, e.g. through SLURM). Use --backend cpu to run on the '
    'Lava CPU simulator')


class BackendUnavailable(RuntimeError):
    """The requested Lava backend cannot run on this machine."""


@dataclass
class LavaResult:
    """Outcome of a Lava run. ``fingerprints[name]``: ``[S*T, 2]`` (spike
    count, checksum) per layer and step; ``synops``/``neuron_updates``: counts
    of operations actually executed per layer."""
    logits: np.ndarray
    fingerprints: dict
    synops: dict
    neuron_updates: dict
    wall_s: float
    num_steps: int
    processes: int
    input_analog: dict = field(default_factory=dict)

    @property
    def predictions(self):
        return np.argmax(self.logits, axis=1)


def run_config(backend: str):
    """Lava run configuration for ``'cpu'`` or ``'loihi2'``."""
    if backend == 'cpu':
        from lava.magma.core.run_configs import Loihi2SimCfg
        return Loihi2SimCfg(select_tag='fixed_pt')
    if backend == 'loihi2':
        from lava.utils import loihi
        if not loihi.is_installed():
            raise BackendUnavailable(INRC_MESSAGE)
        from lava.magma.core.run_configs import Loihi2HwCfg
        loihi.use_slurm_host()
        return Loihi2HwCfg(select_tag='fixed_pt')
    raise BackendUnavailable(f"unknown backend {backend!r}; expected 'cpu' or 'loihi2'")


def _source(spec: NetSpec, i: int) -> int:
    """Skip ``flatten`` layers: the process whose output feeds layer ``i``."""
    while spec.layers[i].type == 'flatten':
        i = spec.layers[i].inputs[0]
    return i


def build(spec: NetSpec, frames: np.ndarray, gating: bool = True):
    """Processes for ``spec`` fed with ``frames [S, C, H, W, T]`` (integers).

    Returns ``(procs, layer_procs, readout)``: all processes, the gated layer
    processes by layer name, and the readout.
    """
    from .lava_processes.process import FrameInput, GatedAttention, GatedLayer, Readout
    num_samples, t_max = frames.shape[0], frames.shape[-1]
    num_steps = num_samples * t_max
    procs, by_index, layer_procs = [], {}, {}
    for i, layer in enumerate(spec.layers):
        steps = t_max if layer.active_steps is None else layer.active_steps
        common = dict(t_max=t_max, active_steps=steps, gating=gating, num_steps=num_steps,
                      name=layer.name)
        if layer.type == 'input':
            proc = FrameInput(frames=frames, name=layer.name)
        elif layer.type == 'flatten':
            continue
        elif layer.type in ('conv', 'dense'):
            src = spec.layers[_source(spec, layer.inputs[0])]
            p = layer.params
            proc = GatedLayer(kind=layer.type, in_shape=tuple(src.shape), out_shape=tuple(layer.shape),
                              weight=p['weight'].astype(float), bias=p['bias'].astype(np.int64),
                              neuron=layer.neuron, stride=p.get('stride', 1),
                              padding=p.get('padding', 0), **common)
        elif layer.type == 'attention':
            proc = GatedAttention(shape=tuple(layer.shape), heads=layer.params['heads'],
                                  weight=layer.params['weight'], neuron=layer.neuron, **common)
        elif layer.type == 'readout':
            continue
        else:  # never skip a layer silently
            raise ValueError(f'layer {i} ({layer.name!r}): unknown layer type {layer.type!r}; '
                             'supported: input, conv, flatten, dense, attention, readout')
        procs.append(proc)
        by_index[i] = proc
        if layer.type != 'input':
            layer_procs[layer.name] = proc
    # connections: several sources into one port are summed by Lava
    for i, layer in enumerate(spec.layers):
        if i not in by_index or layer.type == 'input':
            continue
        proc = by_index[i]
        if layer.type == 'attention':
            for port, j in zip((proc.q_in, proc.k_in, proc.v_in), layer.inputs):
                by_index[_source(spec, j)].s_out.connect(port)
        else:
            for j in layer.inputs:
                by_index[_source(spec, j)].s_out.connect(proc.a_in)
    # readout: the file's, or spike counts of the last layer (stock NetX files)
    last = spec.layers[-1]
    if last.type == 'readout':
        sources = [_source(spec, j) for j in last.inputs]
        weight, bias = last.params['weight'].astype(float), last.params['bias'].astype(float)
    else:
        sources = [_source(spec, len(spec.layers) - 1)]
        n = spec.layers[sources[0]].shape[0]
        weight, bias = np.eye(n), np.zeros(n)
    in_shape = tuple(spec.layers[sources[0]].shape)
    readout = Readout(in_shape=in_shape, weight=weight, bias=bias, t_max=t_max,
                      num_samples=num_samples)
    for j in sources:
        by_index[j].s_out.connect(readout.a_in)
    procs.append(readout)
    return procs, layer_procs, readout


def run(spec: NetSpec, frames: np.ndarray, gating: bool = True, backend: str = 'cpu') -> LavaResult:
    """Run ``spec`` on ``frames [S, C, H, W, T]`` and collect the results."""
    from lava.magma.core.run_conditions import RunSteps
    cfg = run_config(backend)
    frames = np.ascontiguousarray(frames, dtype=float)
    procs, layer_procs, readout = build(spec, frames, gating)
    num_steps = frames.shape[0] * frames.shape[-1]
    first = procs[0]
    t0 = time.perf_counter()
    # Lava forks one OS process per process model. A terminal's Ctrl-C reaches the whole
    # process group: while the runtime starts, SIGINT is only recorded, and the forked
    # children keep that recording handler, so they never raise; this process then raises
    # KeyboardInterrupt and stops the runtime in `finally`, which ends every child.
    in_main_thread = threading.current_thread() is threading.main_thread()
    interrupted = []
    previous = (signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
                if in_main_thread else None)
    try:
        try:
            first.run(condition=RunSteps(num_steps=num_steps, blocking=False), run_cfg=cfg)
        finally:
            if in_main_thread:
                signal.signal(signal.SIGINT, previous)
        if interrupted:
            raise KeyboardInterrupt
        first.wait()
        wall = time.perf_counter() - t0
        # read every Var before stop()
        logits = readout.logits.get().copy()
        fps = {n: p.fingerprint.get().astype(np.int64) for n, p in layer_procs.items()}
        synops = {n: int(p.synops.get()[0]) for n, p in layer_procs.items()}
        updates = {n: int(p.neuron_updates.get()[0]) for n, p in layer_procs.items()}
    finally:
        try:
            first.stop()
        except Exception:  # the runtime may already be down after an error
            pass
    # layers fed by the direct-encoded input (their operations are MACs, not ACs)
    analog = {layer.name: spec.layers[_source(spec, layer.inputs[0])].type == 'input'
              for layer in spec.layers if layer.name in layer_procs}
    return LavaResult(logits=logits, fingerprints=fps, synops=synops, neuron_updates=updates,
                      wall_s=wall, num_steps=num_steps, processes=len(procs), input_analog=analog)
