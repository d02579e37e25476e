"""Build Lava processes from a network file (ours or stock NetX) and run them
on the Lava CPU simulator (``Loihi2SimCfg(select_tag='fixed_pt')``): ``batch``
samples side by side per window of ``t_max`` steps, windows back to back.

Every run is stopped on every path (errors and Ctrl-C included).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .netx_file import FORMAT, NetSpec

INRC_MESSAGE = (
    'the Loihi 2 backend needs lava-loihi, which Intel distributes to members of its '
    'Neuromorphic Research Community (INRC) only; see https://intel-ncl.atlassian.net/wiki/'
    'spaces/INRC/overview (join the INRC, then install lava-loihi in this virtual environment '
    'and run on an INRC Loihi 2 system, e.g. through SLURM). Use --backend cpu to run on the '
    'Lava CPU simulator')


# Slots per Lava channel. Under LoihiProtocol a data channel holds at most one
# message per step, and Lava's default (64) keeps 64 messages' worth of shared
# memory per connection (640 MB for a batch of 100 of a 16x28x28 layer).
CHANNEL_SLOTS = 4


class BackendUnavailable(RuntimeError):
    """The requested Lava backend cannot run on this machine."""


class MemoryLimitError(ValueError):
    """A run would need more memory than allowed (``--max-memory-gb``)."""


class LavaRunError(RuntimeError):
    """A Lava process failed, died or missed the run's deadline; the run was stopped."""


DEFAULT_MEMORY_FRACTION = 0.5   # of the machine's RAM, the default memory limit of a run


# ------------------------------------------------ ending with the parent, however it ends
class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, SLURM, systemd) received: handled like Ctrl-C."""


_stop_signal = []      # the stop signal received (SIGINT or SIGTERM), kept until handled


def _on_stop_signal(signum, frame):
    _stop_signal.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


_on_stop_signal.lava_dtss = True


def install_stop_handlers():
    """Make SIGINT and SIGTERM stop a run (main thread only): each raises
    (``KeyboardInterrupt``, :class:`Terminated`) and is also recorded, so that a
    signal whose exception was swallowed (one that arrived while a finaliser
    ran, where Python only prints "Exception ignored") still stops the run at
    the next check (:func:`check_stop`)."""
    signal.signal(signal.SIGINT, _on_stop_signal)
    signal.signal(signal.SIGTERM, _on_stop_signal)


def check_stop():
    """Raise the exception of a stop signal that was received but not acted on."""
    if _stop_signal:
        term = signal.SIGTERM in _stop_signal
        _stop_signal.clear()
        raise Terminated() if term else KeyboardInterrupt()


PR_SET_PDEATHSIG = 1
_fork_parent = {}


def die_with_parent(parent_pid: int = None):
    """In a child process: ask the kernel to SIGKILL this process when its parent
    ends, however it ends (``kill -9`` included; Linux ``prctl(PR_SET_PDEATHSIG)``),
    and exit at once if the parent is already gone. Usable as ``preexec_fn``.
    A no-op where prctl is not available."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)     # the parent died before the request was made


def _before_fork():
    _fork_parent['pid'] = os.getpid()
    # the kernel ties the parent-death signal to the forking *thread*: only forks of
    # the main thread (where Lava forks its processes) get it
    _fork_parent['main'] = threading.current_thread() is threading.main_thread()


def _after_fork_in_child():
    """Every process Lava forks (one per process model, the runtime services,
    the shared-memory manager) ends with the process that forked it. A stop
    handler of ours (inherited by the fork) is reset, so that SIGTERM ends the
    child as it ends any process."""
    if not _fork_parent.get('main'):
        return
    die_with_parent(_fork_parent.get('pid'))
    try:
        if getattr(signal.getsignal(signal.SIGTERM), 'lava_dtss', False):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):
        pass


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def physical_memory() -> int:
    """Bytes of RAM of this machine (``os.sysconf``), 0 where unknown."""
    try:
        return int(os.sysconf('SC_PAGE_SIZE')) * int(os.sysconf('SC_PHYS_PAGES'))
    except (ValueError, OSError, AttributeError):
        return 0


def default_memory_limit() -> int:
    """Default limit of a run's estimated memory: half the machine's RAM (8 GiB where unknown)."""
    ram = physical_memory()
    return int(DEFAULT_MEMORY_FRACTION * ram) if ram else 8 << 30


@dataclass
class LavaResult:
    """Outcome of a Lava run. ``fingerprints[name]``: ``[S*T, 2]`` (spike
    count, checksum) per layer, row ``s * T + t`` for sample ``s`` at step ``t``;
    ``synops``/``neuron_updates``: counts of operations actually executed per
    layer; ``wall_s``: compile, start-up and steps; ``startup_s``: compile and
    start-up only; ``memory``: :func:`estimate_memory` of the run (bytes)."""
    logits: np.ndarray
    fingerprints: dict
    synops: dict
    neuron_updates: dict
    wall_s: float
    num_steps: int
    processes: int
    input_analog: dict = field(default_factory=dict)
    batch: int = 1
    memory: dict = field(default_factory=dict)
    startup_s: float = 0.0
    spikes: dict = field(default_factory=dict)
    voltages: dict = field(default_factory=dict)
    exit_steps: np.ndarray = None    # early exit (run_exit): window steps each sample ran

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


def _frame_layout(spec: NetSpec, frames: np.ndarray, t_max):
    """``t_max`` of ``frames``: ``[S, C, H, W, T]`` (a frame per step) or
    ``[S, C, H, W]`` (direct encoding, the same frame for ``t_max`` steps)."""
    in_ndim = len(spec.layers[0].shape)
    if frames.ndim == in_ndim + 2:
        if t_max is not None and t_max != frames.shape[-1]:
            raise ValueError(f't_max {t_max} differs from the frames\' {frames.shape[-1]} steps')
        return int(frames.shape[-1])
    if frames.ndim != in_ndim + 1:
        raise ValueError(f'frames of shape {frames.shape} for input {tuple(spec.layers[0].shape)}: '
                         'expected [S, *input] or [S, *input, T]')
    t_max = t_max or spec.t_max
    if not t_max:
        raise ValueError('frames without a time axis need t_max (the file stores none)')
    return int(t_max)


def windows(num_samples: int, batch: int) -> int:
    """Windows of ``batch`` samples needed for ``num_samples`` (last one padded)."""
    return -(-num_samples // batch)


def estimate_memory(spec: NetSpec, num_samples: int, t_max: int, batch: int = 1,
                    frame_steps: int = 1, reference: bool = False, recorded: int = 0) -> dict:
    """Estimated bytes of a run's data, by part, from the declared sizes only
    (nothing is allocated): ``frames`` (float64, ``frame_steps`` per sample,
    held here and in the input process), ``weights`` (the file's integers, the
    float copies given to the processes and their float32 copies), ``states``
    (per neuron of ``batch`` samples: u, v, scratch and the output message),
    ``channels`` (shared-memory slots of every connection), ``records``
    (fingerprints ``[S*T, 2]`` and logits: Var, pipe and the copy here),
    ``workspace`` (largest im2col matrix); with ``reference``, ``reference``
    (spikes of every layer of the training-side model for a batch of up to 256
    samples over ``t_max`` steps); ``total``. ``recorded``: neurons whose
    output is recorded at every step (``run(record=...)``, in ``records``).
    Excludes the Python interpreters themselves (one per process)."""
    layers = [l for l in spec.layers if l.type not in ('input', 'flatten', 'readout')]
    sizes = {i: int(np.prod(l.shape)) for i, l in enumerate(spec.layers) if l.type != 'flatten'}
    frames = 2 * 8 * num_samples * sizes[0] * frame_steps
    weights = sum(28 * int(np.size(l.params['weight'])) for l in spec.layers
                  if isinstance(l.params.get('weight'), np.ndarray))
    for l in spec.layers:   # delayed dense (stock timing): one weight copy per delay value, a buffer
        d = l.params.get('delay')
        if isinstance(d, np.ndarray):
            weights += 8 * d.size * len(np.unique(d)) + 8 * (int(d.max()) + 1) * d.shape[0]
    states = sum(33 * batch * int(np.prod(l.shape)) for l in layers)
    channels = sum(8 * batch * sizes[_source(spec, j)] * CHANNEL_SLOTS
                   for l in spec.layers[1:] if l.type != 'flatten' for j in l.inputs)
    if spec.layers[-1].type != 'readout':   # stock files: an identity readout of the last layer
        last = _source(spec, len(spec.layers) - 1)
        weights += 3 * 8 * spec.layers[last].shape[0] ** 2
        channels += 8 * batch * sizes[last] * CHANNEL_SLOTS
    classes = spec.layers[-1].shape[0] if spec.layers[-1].type == 'readout' else 0
    if spec.layers[0].neuron:   # stock NetX's Input block: one more layer of neurons
        layers = [spec.layers[0]] + layers
    records = 3 * 8 * (len(layers) * num_samples * t_max * 2 + num_samples * max(classes, 1))
    records += (3 * 8 + 1) * recorded * (num_samples * t_max + len(layers))
    workspace = 0   # the largest im2col matrix of a conv layer, per process
    for l in layers:
        if l.type == 'conv':
            co, ci, k, _ = l.params['weight'].shape
            workspace = max(workspace, 8 * batch * ci * k * k * int(np.prod(l.shape[1:])))
    mem = {'frames': frames, 'weights': weights, 'states': states, 'channels': channels,
           'records': records, 'workspace': workspace}
    if reference:   # float64 spikes and membrane states of every layer, 256 samples x T steps
        mem['reference'] = 3 * 8 * min(num_samples, 256) * t_max * sum(sizes.values())
    mem['total'] = sum(mem.values())
    return mem


def check_memory(spec: NetSpec, num_samples: int, t_max: int, batch: int = 1, frame_steps: int = 1,
                 limit: int = None, source: str = 'the network', reference: bool = False,
                 recorded: int = 0) -> dict:
    """:func:`estimate_memory`, refused with :class:`MemoryLimitError` (one line
    naming ``source``, the estimate and the limit) beyond ``limit`` bytes
    (default :func:`default_memory_limit`). Called before anything is built."""
    limit = default_memory_limit() if limit is None else int(limit)
    mem = estimate_memory(spec, num_samples, t_max, batch, frame_steps, reference, recorded)
    if mem['total'] > limit:
        parts = ', '.join(f'{k} {v / 2**30:.3g}' for k, v in mem.items()
                          if k != 'total' and v >= mem['total'] / 100)
        raise MemoryLimitError(
            f'{source}: a run of {num_samples} samples x {t_max} steps (batch {batch}) needs an estimated '
            f'{mem["total"] / 2**30:.3g} GiB ({parts}), beyond the limit of {limit / 2**30:.3g} GiB; '
            'raise it with --max-memory-gb if the machine has the memory, or run fewer samples or '
            'a smaller --batch')
    return mem


def timing_of(spec: NetSpec, timing: str = 'auto') -> str:
    """``'stock'`` (stock NetX's pipeline, see ``GatedLayer``) or ``'sync'``
    (layer-synchronous); ``'auto'``: stock for files without our ``meta/format``."""
    if timing == 'auto':
        return 'sync' if spec.meta.get('format') == FORMAT else 'stock'
    if timing not in ('sync', 'stock'):
        raise ValueError(f"timing {timing!r}: expected 'auto', 'sync' or 'stock'")
    return timing


def build(spec: NetSpec, frames: np.ndarray, gating: bool = True, batch: int = 1,
          t_max: int = None, timing: str = 'auto', reset_interval: int = 0, *,
          reset_offset: int = 0, input_bias: np.ndarray = None, input_message_bits: int = 0,
          record: tuple = (), record_voltage: tuple = (), exit_threshold=False):
    """Processes for ``spec`` fed with ``frames`` (integers): ``[S, C, H, W, T]``,
    or ``[S, C, H, W]`` shown for ``t_max`` steps (default: the file's T_max);
    ``batch`` samples side by side.

    ``timing`` (:func:`timing_of`): ``'stock'`` reproduces stock NetX's
    ``hdf5.Network(path, reset_interval=R)`` (``reset_interval=0``: no reset,
    NetX's default) step for step; it runs one sample stream (``batch=1``),
    sample ``s`` at Lava steps ``s*T+1 .. s*T+T``, and layer fingerprints
    record Lava steps 1 .. S*T (row ``k - 1``); the run lasts ``depth`` more
    steps (zero input) so that the readout, which lags the input by the
    pipeline depth, counts every sample's ``T`` steps of the last layer. As NetX's default
    ``input_message_bits=0``, the first layer sees a non-zero input value as a
    spike (1); with ``input_message_bits > 0`` it sees the values themselves.
    ``reset_offset``: NetX's phase shift of the resets (``Network(reset_offset=)``).

    An input layer with a neuron (stock timing only) runs as stock NetX's
    ``Input`` block: ``frames`` go into the neuron (stock:
    ``source.s_out.connect(net.in_layer.neuron.a_in)``) and ``input_bias``
    (bias mantissa, integers, ``[C, H, W]`` / ``[N]``, or one per sample
    ``[S, C, H, W]``; default 0) is its bias (stock:
    ``net.in_layer.neuron.bias_mant``). ``record``: names of layers whose
    output is recorded at every Lava step (``LavaResult.spikes``; stock timing);
    ``record_voltage``: those whose voltage is (``LavaResult.voltages``).

    ``exit_threshold`` (layer-synchronous timing, a file with a readout):
    ``False`` (default) builds the windowed processes above; ``None`` (exit
    policy never) or an integer (margin threshold) builds the early-exit
    processes of ``lava_processes.exit_process`` (per-row window clocks,
    continuous batching; see :func:`run_exit`).

    Returns ``(procs, layer_procs, readout)``: all processes, the gated layer
    processes by layer name, and the readout.
    """
    from ..lava_processes.process import FrameInput, GatedAttention, GatedLayer, Readout
    exits = exit_threshold is not False
    if exits:
        from ..lava_processes.exit_process import (ExitFrameInput as FrameInput,  # noqa: F811
                                                   ExitGatedAttention as GatedAttention,
                                                   ExitGatedLayer as GatedLayer,
                                                   ExitReadout)
        if timing_of(spec, timing) != 'sync':
            raise ValueError('early exit runs in layer-synchronous timing only (timing \'sync\')')
    if int(batch) < 1:
        raise ValueError(f'batch must be >= 1, got {batch}')
    t_max = _frame_layout(spec, frames, t_max)
    timing = timing_of(spec, timing)
    if timing == 'stock':
        if int(batch) != 1:
            raise ValueError(f'batch {batch}: stock NetX timing runs one sample stream; use batch 1 '
                             "(or timing 'sync')")
        for i, l in enumerate(spec.layers):
            if l.type in ('attention', 'readout') or len(l.inputs) > 1:
                what = (f'has {len(l.inputs)} inputs (dtss/inputs {l.inputs})' if len(l.inputs) > 1
                        else f'is an {l.type} layer')
                raise ValueError(f"layer {i} ({l.name!r}) {what}: stock NetX timing needs a chain of "
                                 "input/conv/flatten/dense layers (stock NetX reads no dtss/inputs); "
                                 "use timing 'sync' (--timing sync)")
    neuron_in = bool(spec.layers[0].neuron)     # stock NetX's Input block (a neuron)
    if neuron_in and timing != 'stock':
        raise ValueError("an input layer with a neuron runs in stock NetX timing only; use timing "
                         "'stock' (the default for stock files)")
    if spec.layers[0].neuron.get('type') == 'SDNN':    # a sigma-delta network (netx_file._check_sdnn)
        if timing != 'stock':
            raise ValueError("a sigma-delta (SDNN) network runs in stock NetX timing only; use timing "
                             "'stock' (the default for stock files)")
        for what, given in (('a reset interval (stock NetX ignores it with a warning)', reset_interval),
                            ('a reset offset', reset_offset),
                            ('input_bias (its Delta encoder has no bias)', input_bias is not None),
                            ('input_message_bits (its graded messages have 16 bits)', input_message_bits)):
            if given:
                raise ValueError(f'{what} is not supported with a sigma-delta (SDNN) network')
    if input_bias is not None and not neuron_in:
        raise ValueError('input_bias needs an input layer with a neuron (the file has none)')
    if (record or record_voltage) and int(batch) != 1:
        raise ValueError(f'recording every layer output needs batch 1 (one sample stream), got {batch}')
    if timing != 'stock' and (reset_interval or reset_offset):
        raise ValueError('a reset interval/offset applies to stock NetX timing; this file runs '
                         'layer-synchronously, every sample from zero state (drop --reset-interval '
                         'and --reset-offset, or use --timing stock)')
    num_samples = frames.shape[0]
    # stock timing: the readout lags the input by the pipeline depth, so the run goes on
    # that many steps (zero input) after the last sample
    lag = sum(l.type in ('conv', 'dense') for l in spec.layers) if timing == 'stock' else 0
    num_steps = windows(num_samples, batch) * t_max + lag
    procs, by_index, layer_procs = [], {}, {}
    depth = 0
    stock = {}
    for i, layer in enumerate(spec.layers):
        steps = t_max if layer.active_steps is None else layer.active_steps
        common = dict(t_max=t_max, active_steps=steps, gating=gating, num_samples=num_samples,
                      num_steps=num_steps, batch=batch, name=layer.name)
        if timing == 'stock':    # NetX resets block j (0-based, in the order it builds them) at offset + 1 + j
            stock = dict(timing='stock', reset_interval=int(reset_interval or 0),
                         reset_phase=int(reset_offset) + 1 + (depth + int(neuron_in) if i else 0),
                         record_steps=num_steps if layer.name in record or layer.name in record_voltage else 0,
                         record_voltage=layer.name in record_voltage)
        if layer.type == 'input':
            proc = FrameInput(frames=frames, in_shape=tuple(layer.shape), t_max=t_max,
                              batch=batch, name=layer.name)
            if neuron_in:        # the Input block's neuron: a layer without synapse
                procs.append(proc)
                shape = tuple(layer.shape)
                bias = np.zeros((1,) + shape, np.int64) if input_bias is None else np.asarray(input_bias)
                bias = bias.reshape((-1,) + shape).astype(np.int64)
                neuron = GatedLayer(kind='input', in_shape=shape, out_shape=shape, weight=np.zeros(1),
                                    bias=bias, neuron=layer.neuron, depth=0, **common, **stock)
                proc.s_out.connect(neuron.a_in)
                proc = neuron
                layer_procs[layer.name] = proc
        elif layer.type == 'flatten':
            continue
        elif layer.type in ('conv', 'dense'):
            src = spec.layers[_source(spec, layer.inputs[0])]
            p = layer.params
            depth += 1
            if timing != 'stock' and (layer.name in record or layer.name in record_voltage):
                # layer-synchronous: Lava step s*T + t + 1 is sample s, window step t (issue 26)
                common.update(record_steps=num_steps, record_voltage=layer.name in record_voltage)
            if timing == 'stock':
                common.update(depth=depth, delay=p.get('delay'), **stock,
                              binary_input=src.type == 'input' and not neuron_in and not input_message_bits)
            elif p.get('delay') is not None:
                raise ValueError(f'layer {i} ({layer.name!r}): synaptic delays run in stock NetX timing '
                                 "only; use timing 'stock' (the default for stock files)")
            proc = GatedLayer(kind=layer.type, in_shape=tuple(src.shape), out_shape=tuple(layer.shape),
                              weight=p['weight'].astype(float), bias=p['bias'].astype(np.int64),
                              neuron=layer.neuron, stride=p.get('stride', 1),
                              padding=p.get('padding', 0), geometry=p.get('geometry'), **common)
        elif layer.type == 'attention':
            if layer.name in record or layer.name in record_voltage:
                raise ValueError(f'layer {i} ({layer.name!r}): spiking attention is not recorded; record '
                                 'conv or dense layers')
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
    unknown = sorted((set(record) | set(record_voltage)) - set(layer_procs))
    if unknown:
        raise ValueError(f'layers {unknown} cannot be recorded; layers with neurons: {sorted(layer_procs)}')
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
    ro_args = dict(in_shape=in_shape, weight=weight, bias=bias, t_max=t_max,
                   num_samples=num_samples, num_steps=num_steps, batch=batch, offset=lag)
    readout = ExitReadout(threshold=exit_threshold, **ro_args) if exits else Readout(**ro_args)
    for j in sources:
        by_index[j].s_out.connect(readout.a_in)
    if exits:   # the stop message: readout -> input and every layer
        for p in procs:
            readout.exit_out.connect(p.exit_in)
    procs.append(readout)
    return procs, layer_procs, readout



def _prepare_run(spec, frames, t_max, batch, max_memory, recorded: int = 0):
    """The checks every run starts with: ``frames`` as contiguous floats, the batch,
    the frame layout (``T_max``) and the memory estimate (:class:`MemoryLimitError`
    beyond ``max_memory``). Returns ``(frames, t_max, memory)``."""
    frames = np.ascontiguousarray(frames, dtype=float)
    if int(batch) < 1:
        raise ValueError(f'batch must be >= 1, got {batch}')
    t_max = _frame_layout(spec, frames, t_max)
    timed = frames.ndim == len(spec.layers[0].shape) + 2
    memory = check_memory(spec, frames.shape[0], t_max, batch, t_max if timed else 1, max_memory,
                          recorded=recorded)
    return frames, t_max, memory

def run(spec: NetSpec, frames: np.ndarray, gating: bool = True, backend: str = 'cpu',
        batch: int = 1, t_max: int = None, max_memory: int = None,
        deadline_s: float = None, timing: str = 'auto', reset_interval: int = 0, *,
        reset_offset: int = 0, input_bias: np.ndarray = None, input_message_bits: int = 0,
        record: tuple = (), record_voltage: tuple = ()) -> LavaResult:
    """Run ``spec`` on ``frames`` (``[S, C, H, W, T]``, or ``[S, C, H, W]`` shown
    for ``t_max`` steps), ``batch`` samples side by side, and collect the results.
    ``reset_offset``, ``input_bias``, ``input_message_bits``, ``record``,
    ``record_voltage``: see :func:`build` (``LavaResult.spikes[name]``:
    ``[K, *shape]`` 0/1 (graded integers in a sigma-delta network) at Lava steps 1 .. K of every
    recorded layer, ``(C, H, W)``
    order; ``LavaResult.voltages[name]``: the voltage after each step, same layout).

    Refuses (:class:`MemoryLimitError`, before any process is built) a run whose
    estimated memory exceeds ``max_memory`` bytes (default: half the RAM), and
    stops the run with :class:`LavaRunError` when a Lava process fails or the
    run passes ``deadline_s`` (default :func:`default_deadline`)."""
    cfg = run_config(backend)
    frames, t_max, memory = _prepare_run(spec, frames, t_max, batch, max_memory,
                                         recorded=sum(int(np.prod(l.shape)) * ((l.name in record)
                                                                               + (l.name in record_voltage))
                                                      for l in spec.layers))
    procs, layer_procs, readout = build(spec, frames, gating, batch, t_max, timing, reset_interval,
                                        reset_offset=reset_offset, input_bias=input_bias,
                                        input_message_bits=input_message_bits, record=tuple(record),
                                        record_voltage=tuple(record_voltage))
    num_steps = readout.proc_params['num_steps']
    if deadline_s is None:
        deadline_s = default_deadline(num_steps, memory['total'])

    # binary spikes as int8; a sigma-delta network's graded messages (16 bits, Sigma's 24) as int32
    spike_dtype = np.int32 if spec.layers[0].neuron.get('type') == 'SDNN' else np.int8

    def collect():
        # read everything before stop(): records through their external pipes (one
        # message each, sent at the last step), counters through Var.get()
        return (_record(readout.logits_rec),
                {n: _record(p.fingerprint_rec).astype(np.int64) for n, p in layer_procs.items()},
                {n: int(p.synops.get()[0]) for n, p in layer_procs.items()},
                {n: int(p.neuron_updates.get()[0]) for n, p in layer_procs.items()},
                {n: _record(layer_procs[n].spikes_rec).astype(spike_dtype) for n in record},
                {n: _record(layer_procs[n].voltages_rec).astype(np.int64) for n in record_voltage})
    (logits, fps, synops, updates, spikes, volts), wall_s, startup_s = execute(procs[0], cfg, num_steps,
                                                                               collect, deadline_s)
    # layers fed by the direct-encoded input (their operations are MACs, not ACs)
    analog = {layer.name: bool(layer.inputs) and not spec.layers[0].neuron
              and spec.layers[_source(spec, layer.inputs[0])].type == 'input'
              for layer in spec.layers if layer.name in layer_procs}
    return LavaResult(logits=logits, fingerprints=fps, synops=synops, neuron_updates=updates,
                      wall_s=wall_s, num_steps=num_steps, processes=len(procs),
                      input_analog=analog, batch=int(batch), memory=memory, startup_s=startup_s,
                      spikes=spikes, voltages=volts)


CONFIDENCE_IN_LAVA = ('the confidence policy needs a softmax (exp), which the Lava readout does not '
                      'compute (integer arithmetic only, as a chip); use --exit-policy margin')


def run_exit(spec: NetSpec, frames: np.ndarray, policy: str = 'margin', threshold=None,
             gating: bool = True, backend: str = 'cpu', batch: int = 1, t_max: int = None,
             max_memory: int = None, deadline_s: float = None) -> LavaResult:
    """Run ``spec`` on ``frames`` with per-sample early exit and continuous
    batching (``lava_processes.exit_process``): ``batch`` rows, each with its own
    window clock; a row whose sample exits (``policy='margin'``: the readout's
    ``top1 - top2`` of the accumulated integer logit sums ``>= threshold``) or
    reaches ``T_max`` takes the next sample at the next Lava step. ``'never'``
    runs every sample ``T_max`` steps through the same processes. ``confidence``
    needs a softmax (``exp``) and is refused: the chip's readout has integers only.

    The run goes on in pieces, each as long as the fewest steps that can still
    be needed (at most ``batch`` samples end per step, then one flush step in
    which every process sends its records), so it stops exactly one step after
    the last sample ends. Returns a :class:`LavaResult`: ``logits`` are ``z`` at
    each sample's last step (``early_exit``: ``T_max`` times the file's logits
    at the full window), ``exit_steps`` the window steps each sample ran,
    ``num_steps`` the Lava steps run; operation counts include the exits."""
    from . import early_exit
    early_exit.check_readout(spec)
    threshold = early_exit.check_policy(policy, threshold)
    if policy == 'confidence':
        raise ValueError(CONFIDENCE_IN_LAVA)
    cfg = run_config(backend)
    frames, t_max, memory = _prepare_run(spec, frames, t_max, batch, max_memory)
    procs, layer_procs, readout = build(spec, frames, gating, batch, t_max, 'sync',
                                        exit_threshold=threshold)
    num_samples, batch = frames.shape[0], int(batch)
    if deadline_s is None:
        deadline_s = default_deadline(readout.proc_params['num_steps'] + 1, memory['total'])
    first_run = windows(num_samples, batch) + 1      # fewest steps: B samples end per step, + flush
    ran = [first_run]

    def more():
        finished, flushed = (int(v) for v in readout.progress.get())
        k = 0 if flushed else 1 if finished == num_samples else \
            windows(num_samples - finished, batch) + 1
        ran.append(k)
        return k

    def collect():
        return (_record(readout.logits_rec), _record(readout.steps_rec).astype(np.int64),
                {n: _record(p.fingerprint_rec).astype(np.int64) for n, p in layer_procs.items()},
                {n: int(p.synops.get()[0]) for n, p in layer_procs.items()},
                {n: int(p.neuron_updates.get()[0]) for n, p in layer_procs.items()})
    (logits, steps, fps, synops, updates), wall_s, startup_s = execute(
        procs[0], cfg, first_run, collect, deadline_s, more=more)
    analog = {layer.name: spec.layers[_source(spec, layer.inputs[0])].type == 'input'
              for layer in spec.layers if layer.name in layer_procs}
    return LavaResult(logits=logits.astype(np.int64), fingerprints=fps, synops=synops,
                      neuron_updates=updates, wall_s=wall_s, num_steps=sum(ran), processes=len(procs),
                      input_analog=analog, batch=batch, memory=memory, startup_s=startup_s,
                      exit_steps=steps)


def run_stock_netx(path: str, frames: np.ndarray, reset_interval: int = None, skip_layers: int = 0,
                   record: str = 'all', *, num_layers: int = None, reset_offset: int = 0,
                   input_message_bits: int = 0, input_bias: np.ndarray = None) -> list:
    """Stock ``lava.lib.dl.netx.hdf5.Network`` on a file: the reference that this
    runtime's stock timing reproduces (tests, benchmark). ``frames``: the input
    stream, ``[C, H, W, K]`` or ``[N, K]`` for K Lava steps. Returns, for every
    layer NetX builds (``record='last'``: the last one only), its output
    ``[..., K]`` with conv outputs in (C, H, W) order. Stopped on every path.

    A file whose input layer has a neuron is driven as lava-dl's own tests do:
    ``frames`` into ``net.in_layer.neuron.a_in`` (``net.inp`` has no CPU model
    there), ``input_bias`` (``[C, H, W]`` / ``[N]``) into its ``bias_mant``."""
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io
    net = netx.hdf5.Network(net_config=path, reset_interval=reset_interval, skip_layers=skip_layers,
                            num_layers=num_layers, reset_offset=reset_offset,
                            input_message_bits=input_message_bits)
    steps = frames.shape[-1]

    def whc(a):   # (C, H, W, ...) -> NetX's (W, H, C, ...)
        return a.transpose((2, 1, 0) + tuple(range(3, a.ndim))) if a.ndim >= 3 else a
    src = io.source.RingBuffer(data=whc(frames))
    layers = net.layers if record == 'all' else net.layers[-1:]
    sinks = [io.sink.RingBuffer(shape=layer.out.shape, buffer=steps) for layer in layers]
    if isinstance(net.in_layer, netx.blocks.process.Input):
        src.s_out.connect(net.in_layer.neuron.a_in)
        if input_bias is not None:
            net.in_layer.neuron.bias_mant.init = whc(np.asarray(input_bias)).astype(np.int32)
    else:
        src.s_out.connect(net.inp)
    for layer, sink in zip(layers, sinks):
        layer.out.connect(sink.a_in)
    try:
        net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag='fixed_pt'))
        outs = [sink.data.get() for sink in sinks]
    finally:
        net.stop()
    return [whc(o) for o in outs]


# ------------------------------------------------------------------ a network file on test images
def run_file(model: str, *, num_samples: int = 100, dataset: str = None, data_dir: str = None,
             batch: int = 1, t_max: int = None, gating: bool = None, backend: str = 'cpu',
             max_memory: int = None, timing: str = 'auto', reset_interval: int = 0,
             skip_input_neuron: bool = False, build: str = 'fused', command: str = '', log=None,
             exit_policy: str = None, exit_threshold=None):
    """What ``scripts/run_lava.py`` does: run the network file ``model`` in Lava
    on the first ``num_samples`` test images of ``dataset`` (default: the file's,
    else digits) and compare every layer's spikes, the logits and the
    predictions with training-side fixed-point inference (our files; a stock
    NetX file has no training-side model).

    ``build='fused'``: our fused processes (:func:`run`), ``batch`` samples side
    by side, gated then ungated (``gating=None``), or only gated (True) or
    ungated (False). ``build='loihi'``: Lava's standard processes
    (``loihi_build.run``), one sample per window, always gated. ``max_memory``:
    bytes (default: half the RAM); ``timing``, ``reset_interval``: see
    :func:`build`; ``skip_input_neuron``: see ``read_netx``; ``command``: recorded
    in the report; ``log``: a function given each progress line (default: print
    it at once).

    ``exit_policy`` (``'margin'``, ``'never'``; with ``exit_threshold``):
    per-sample early exit with continuous batching (:func:`run_exit`), compared
    with ``reference.exit_reference``; fused build, our files only.

    Everything that can be refused is refused before any Lava process starts
    (the file, the options, the mapping of ``--build loihi``, the memory
    estimate, the data). Returns ``(report, results)``: the report that
    ``run_lava.py --json`` writes, and the runs by label ('gated', 'ungated':
    :class:`LavaResult`; 'loihi': ``loihi_build.LoihiResult``)."""
    import torch

    from ..training import data
    from .netx_file import read_netx
    from .reference import direct_images
    log = log or (lambda line: print(line, flush=True))
    spec = read_netx(model, skip_input_neuron=skip_input_neuron)
    if exit_policy is not None:
        from . import early_exit
        early_exit.check_policy(exit_policy, exit_threshold)
        early_exit.check_readout(spec, model)
        if build == 'loihi':
            raise ValueError('--exit-policy runs on the fused build only: --build loihi has no early exit '
                             '(docs/loihi.md says what a chip needs for it)')
        if exit_policy == 'confidence':
            raise ValueError(CONFIDENCE_IN_LAVA)
    dataset = dataset or spec.meta.get('dataset') or 'digits'
    t_max_arg, t_max = t_max, spec.t_max or t_max
    if t_max is None:
        raise ValueError(f'{model} does not store T_max (a stock NetX file): pass --t-max')
    if spec.t_max and t_max_arg and t_max_arg != spec.t_max:
        raise ValueError(f'--t-max {t_max_arg} differs from the file\'s T_max {spec.t_max}')
    if 'config' in spec.meta:   # ours: the training-side model does not wrap; refuse what Lava would
        from .loihi_check import refuse_current_wrap
        refuse_current_wrap(spec, model)
    if build == 'loihi':
        from lava.utils import loihi

        from . import loihi_build
        plan = loihi_build.plan_for(spec, t_max, model)   # what cannot be mapped fails here, before any data
        if backend == 'loihi2' and not loihi.is_installed():
            log(loihi_build.dry_run(plan, num_samples, 'loihi2'))
            log(loihi_build.format_resources(plan))
            raise BackendUnavailable(INRC_MESSAGE)
    # refuse sizes beyond the memory limit before loading data or building any Lava process
    check_memory(spec, max(1, num_samples), t_max, min(batch, max(1, num_samples)),
                 limit=max_memory, source=model, reference='config' in spec.meta)
    test = data.load_dataset(dataset, 'test', data_dir)
    if not 1 <= num_samples <= len(test):
        raise ValueError(f'--num-samples must be in 1..{len(test)} for the {dataset} test set, '
                         f'got {num_samples}')
    xs, ys = zip(*(test[i] for i in range(num_samples)))
    images, labels = torch.stack(xs), np.asarray(ys)
    in_shape = tuple(spec.layers[0].shape)
    if tuple(images.shape[1:]) != in_shape:
        raise ValueError(f'{dataset} images have shape {tuple(images.shape[1:])} but the network '
                         f'{model} expects input {in_shape}')
    frames = direct_images(images, spec.layers[0].params.get('inputScale', 1))   # [S, C, H, W]
    if build == 'loihi':
        return loihi_build.run_and_compare(spec, images, labels, frames, t_max=t_max, backend=backend,
                                           model=model, dataset=dataset, command=command, log=log)
    batch = min(batch, num_samples)
    if exit_policy is not None:
        return _run_file_exit(spec, images, labels, frames, model, dataset, t_max, batch, gating, backend,
                              max_memory, exit_policy, exit_threshold, command, log)
    results = {}
    for mode in ([True, False] if gating is None else [gating]):
        check_stop()
        label = 'gated' if mode else 'ungated'
        log(f'running {num_samples} samples x {t_max} steps on Lava ({backend}, {label}, '
            f'batch {batch}) ...')
        results[label] = run(spec, frames, gating=mode, backend=backend, batch=batch, t_max=t_max,
                             max_memory=max_memory, timing=timing, reset_interval=reset_interval)
    main_res = results['gated' if gating is not False else 'ungated']
    pred = main_res.predictions
    report = {'model': model, 'dataset': dataset, 'num_samples': num_samples, 't_max': t_max,
              'backend': backend, 'accuracy': float((pred == labels).mean()),
              'processes': main_res.processes, 'batch': batch, 'lava_steps': main_res.num_steps,
              'memory_mb': {k: round(v / 2**20, 1) for k, v in main_res.memory.items()},
              'command': command, 'imported_from_nir': 'nir' in spec.meta}

    # agreement with training-side fixed-point inference (our files only)
    if 'config' in spec.meta:
        from .reference import reference_run
        check_stop()
        ref_logits, ref_fps = reference_run(spec, images)
        layer_ok = {n: bool(np.array_equal(ref_fps[n], r.fingerprints[n]))
                    for r in results.values() for n in ref_fps}
        report['agreement'] = {
            'predictions': float((ref_logits.argmax(1) == pred).mean()),
            'logits_equal': all(bool(np.array_equal(ref_logits, r.logits)) for r in results.values()),
            'spikes_equal_all_layers': all(layer_ok.values()),
            'layers_differing': [n for n, ok in layer_ok.items() if not ok],
            'reference_accuracy': float((ref_logits.argmax(1) == labels).mean()),
        }
    else:
        report['agreement'] = None
    if len(results) == 2:
        g, u = results['gated'], results['ungated']
        report['gating_changes_output'] = not all(
            np.array_equal(g.fingerprints[n], u.fingerprints[n]) for n in g.fingerprints)
    layers = {}
    for layer in spec.layers:
        if layer.name not in main_res.synops:
            continue
        entry = {'type': layer.type, 'category': layer.category,
                 'active_steps': layer.active_steps or t_max,
                 'spikes': int(main_res.fingerprints[layer.name][:, 0].sum()),
                 'analog_input': main_res.input_analog[layer.name]}
        for label, r in results.items():
            entry[f'synops_{label}'] = r.synops[layer.name]
            entry[f'neuron_updates_{label}'] = r.neuron_updates[layer.name]
        layers[layer.name] = entry
    report['layers'] = layers
    for label, r in results.items():
        report[f'synops_{label}'] = sum(r.synops.values())
        report[f'neuron_updates_{label}'] = sum(r.neuron_updates.values())
        report[f'wall_s_{label}'] = round(r.wall_s, 3)
        report[f'startup_s_{label}'] = round(r.startup_s, 3)
        report[f'samples_per_s_{label}'] = round(num_samples / r.wall_s, 2)
    return report, results


def _run_file_exit(spec, images, labels, frames, model, dataset, t_max, batch, gating, backend,
                   max_memory, policy, threshold, command, log):
    """:func:`run_file` with early exit: Lava runs (gated, ungated) against the reference."""
    from . import early_exit
    results = {}
    for mode in ([True, False] if gating is None else [gating]):
        check_stop()
        label = 'gated' if mode else 'ungated'
        log(f'running {len(labels)} samples on Lava ({backend}, {label}, batch {batch}, exit policy '
            f'{policy}{"" if threshold is None else " " + str(threshold)}, continuous batching) ...')
        results[label] = run_exit(spec, frames, policy, threshold, gating=mode, backend=backend,
                                  batch=batch, t_max=t_max, max_memory=max_memory)
    main_res = results['gated' if gating is not False else 'ungated']
    pred = main_res.predictions
    check_stop()
    from .reference import exit_reference
    ref = exit_reference(spec, images, policy, threshold)
    layer_ok = {n: all(bool(np.array_equal(fp, r.fingerprints[n])) for r in results.values())
                for n, fp in ref['fingerprints'].items()}
    report = {'model': model, 'dataset': dataset, 'num_samples': len(labels), 't_max': t_max,
              'backend': backend, 'batch': batch, 'exit_policy': policy, 'exit_threshold': threshold,
              'accuracy': float((pred == labels).mean()), 'processes': main_res.processes,
              'avg_exit_steps': float(main_res.exit_steps.mean()), 'lava_steps': main_res.num_steps,
              'lava_steps_without_exit': windows(len(labels), batch) * t_max,
              'command': command,
              'agreement': {
                  'predictions': float((ref['logits'].argmax(1) == pred).mean()),
                  'exit_steps_equal': all(bool(np.array_equal(ref['steps'], r.exit_steps))
                                          for r in results.values()),
                  'logits_equal': all(bool(np.array_equal(ref['logits'], r.logits)) for r in results.values()),
                  'spikes_equal_all_layers': all(layer_ok.values()),
                  'layers_differing': [n for n, ok in layer_ok.items() if not ok],
                  'reference_accuracy': float((ref['logits'].argmax(1) == labels).mean())}}
    for label, r in results.items():
        report[f'synops_{label}'] = sum(r.synops.values())
        report[f'neuron_updates_{label}'] = sum(r.neuron_updates.values())
        report[f'wall_s_{label}'] = round(r.wall_s, 3)
        report[f'startup_s_{label}'] = round(r.startup_s, 3)
    return report, results


def default_deadline(num_steps: int, memory_bytes: int = 0) -> float:
    """Generous wall-clock bound of a run: 10 minutes for start-up, plus 1 s per
    Lava step per 256 MiB of run data (at least 1 s per step). A healthy run
    takes a small fraction of it; the bound only ends runs that hang."""
    return 600.0 + num_steps * max(1.0, memory_bytes / 2**28)


def execute(first, cfg, num_steps: int, collect, deadline_s: float = None, more=None):
    """Compile and run the network of process ``first`` for ``num_steps`` Lava
    steps under run configuration ``cfg``, call ``collect()`` (reads results)
    before the runtime stops, and always stop it (errors and Ctrl-C included).
    Returns ``(collect(), wall_s, startup_s)``. ``more`` (optional): called
    after each run while the network is paused, returns the Lava steps of the
    next run (0: done); each run has its own ``deadline_s``.

    While the steps run, a watchdog checks every Lava OS process: a process
    model that raises (Lava then waits forever for its neighbours), a process
    that dies, or a run past ``deadline_s`` seconds (default
    :func:`default_deadline`) ends the run with :class:`LavaRunError`; every
    Lava process is then ended and the shared memory released."""
    from lava.magma.core.run_conditions import RunSteps
    if deadline_s is None:
        deadline_s = default_deadline(num_steps)
    t0 = time.perf_counter()
    # Lava forks one OS process per process model. A terminal's Ctrl-C reaches the whole
    # process group: while the runtime starts, SIGINT is only recorded, and the forked
    # children keep that recording handler, so they never raise; this process then raises
    # KeyboardInterrupt and stops the runtime in `finally`, which ends every child.
    in_main_thread = threading.current_thread() is threading.main_thread()
    # SIGTERM likewise (handled like Ctrl-C); the children get SIG_DFL back for SIGTERM.
    check_stop()
    in_main_thread = threading.current_thread() is threading.main_thread()
    record = _record_stop_signal
    previous = ({s: signal.signal(s, record) for s in (signal.SIGINT, signal.SIGTERM)}
                if in_main_thread else {})
    healthy = False       # True once the run finished: stop() through Lava, else abort
    try:
        try:
            first.create_runtime(run_cfg=cfg, compile_config={'pypy_channel_size': CHANNEL_SLOTS})
            t1 = time.perf_counter()
            first.run(condition=RunSteps(num_steps=num_steps, blocking=False))
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        check_stop()
        _watch(first.runtime, t0 + deadline_s, deadline_s)
        check_stop()
        while more is not None:
            k = more()
            if not k:
                break
            first.run(condition=RunSteps(num_steps=int(k), blocking=False))
            _watch(first.runtime, time.perf_counter() + deadline_s, deadline_s)
            check_stop()
        healthy = True
        t2 = time.perf_counter()
        out = collect()
    finally:
        runtime = getattr(first, 'runtime', None)
        if healthy:
            try:
                first.stop()
            except Exception:  # the runtime may already be down after an error
                _abort(runtime)
        else:
            _abort(runtime)
    return out, t2 - t0, t1 - t0


def _record_stop_signal(signum, frame):
    _stop_signal.append(signum)


_record_stop_signal.lava_dtss = True


def _actors(runtime):
    """Lava's OS processes of ``runtime`` (process models and runtime services)."""
    infra = getattr(runtime, '_messaging_infrastructure', None)
    return list(getattr(infra, 'actors', None) or [])


def _failure(actors) -> str:
    """What went wrong in Lava's processes: the first exception one of them
    reported (type, message, where), or which one died."""
    for a in actors:
        try:
            exc = a.exception
        except (OSError, ValueError, EOFError):
            exc = None
        if exc:
            err, tb = exc
            frames = [line.strip() for line in tb.splitlines() if line.strip().startswith('File ')]
            where = f' ({frames[-1]})' if frames else ''
            msg = str(err).replace('\n', ' ')
            return f'{type(err).__name__}: {msg}{where}'
    for a in actors:
        code = getattr(a, 'exitcode', None) if not getattr(a, '_is_done', False) else None
        if code not in (None, 0):
            return f'Lava process {a.name} died (exit code {code})'
    return 'a Lava process ended before the run finished'


def _watch(runtime, deadline: float, deadline_s: float):
    """Wait for the run of ``runtime`` like ``runtime.wait()``, but raise
    :class:`LavaRunError` when a Lava process ends early or reports an error,
    or at ``deadline`` (``time.perf_counter()``)."""
    ports = list(getattr(runtime, 'service_to_runtime', None) or [])
    actors = _actors(runtime)
    while True:
        ended = [a for a in actors if not getattr(a, '_is_done', False) and a.exitcode is not None]
        if ended:
            raise LavaRunError(f'a Lava process failed, run stopped: {_failure(actors)}')
        if ports and all(p.probe() for p in ports):
            break                 # every runtime service answered: done, or an error
        check_stop()
        if time.perf_counter() > deadline:
            raise LavaRunError(f'the Lava run did not finish within its deadline of {deadline_s:.0f} s '
                               '(a Lava process stalled); run stopped')
        time.sleep(0.02)
    try:
        runtime.wait()
    except RuntimeError:          # Lava's "N Exception(s) occurred. See output above"
        raise LavaRunError(f'a Lava process failed, run stopped: {_failure(actors)}') from None


def _abort(runtime, grace_s: float = 2.0):
    """End every Lava process of ``runtime`` without waiting on them (after an
    error Lava's own ``stop()`` waits forever for the failed process) and
    release the shared memory."""
    if runtime is None:
        return
    actors = [a for a in _actors(runtime) if not getattr(a, '_is_done', False)]
    for a in actors:
        try:
            if a.is_alive():
                a.terminate()
        except (ValueError, OSError):
            pass
    deadline = time.monotonic() + grace_s
    for a in actors:
        try:
            a._popen and a._popen.wait(max(0.0, deadline - time.monotonic()))
            if a.is_alive():
                a.kill()
        except (ValueError, OSError, AttributeError):
            pass
    for a in actors:
        try:
            a.join()
        except (ValueError, OSError, AssertionError):
            pass
    runtime._is_running = runtime._is_started = False
    try:
        infra = runtime._messaging_infrastructure
        if infra.smm is not None:
            infra.smm.shutdown()
    except Exception:   # already shut down
        pass
    try:
        runtime._watchdog_manager.stop()
    except Exception:
        pass


def _record(port, timeout_s: float = 60.0) -> np.ndarray:
    """The message a process sent through its external-pipe OutPort ``port``."""
    recv = port.external_pipe_csp_recv_port
    deadline = time.monotonic() + timeout_s
    while not recv.probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f'no record from {port.process.name}.{port.name} after the run')
        time.sleep(0.001)
    return recv.recv()
