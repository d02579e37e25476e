"""Second builder (``run_lava.py --build loihi``): the network from Lava's
standard processes, which lava-loihi maps to Loihi 2 neuro-cores and whose
``fixed_pt`` CPU models in lava-nc are bit-accurate to the chip.

Mapping (``docs/loihi.md`` has the full story):

- input: ``lava.proc.io.source.RingBuffer`` (host), one sample per window,
  integer pixels as graded spikes (``num_message_bits`` = bits of the largest value);
- conv layer: one ``lava.proc.conv.Conv`` per input edge (Lava's true
  convolution: kernel flipped, ``(Co, kw, kh, Ci)``, tensors ``(W, H, C)``)
  into one ``lava.proc.lif.LIFReset`` (``du = iDecay - 1``, ``dv = vDecay``,
  ``bias_exp = 6``, as NetX); dense layer: ``Dense`` (``DelayDense`` on a
  delayed edge), weights ``2 w`` with ``weight_exp = -1`` so that the chip's
  mixed-sign weight format (LSB dropped) holds odd 8-bit weights exactly;
- residual sums: every summand has its own synapse process into the same LIF
  (the sum is formed in the dendritic accumulator, never sent as a message, so
  no graded spikes are needed inside the network; only the input is graded);
- latency: every synapse process adds one step. Layer ``L`` runs its window
  step ``t`` of sample ``s`` at Lava step ``off(L) + s * P + t + 1`` with
  ``off(input) = 0``, ``off(L) = 1 + max off(sources)`` (host attention:
  ``max off(sources)``, no synapse); an edge from a source with a smaller
  offset is delayed by ``off(L) - 1 - off(src)`` steps: ``DelayDense`` for a
  dense layer, else a chain of identity relay stages (``Conv`` 1x1 identity +
  ``LIF`` with threshold 0, one step each);
- per-window reset: ``LIFReset(reset_interval=P, reset_offset=(off(L)+1) % P)``
  resets u and v before integrating window step 0. ``P`` is ``T_max`` rounded
  up to a power of two (Loihi 2's reset interval); the ``P - T_max`` padding
  steps get zero input and are gated off; they cost Lava steps, never spikes;
- DTSS gate on chip resources: a shared timer (a ring of ``P`` neurons: a
  bias-driven counter firing once per ``P`` steps and ``P - 1`` relays) drives
  one gate neuron per gated layer, which fires for the layer's window steps
  ``T_l .. P-1``; the gate's inhibitory synapses (one per neuron of the layer)
  add a current larger than any excitatory input, so the layer emits nothing
  after its active steps (needs ``iDecay = 4096`` and an inhibition inside the
  24-bit current); where that does not fit (large fan-in), a relay gate: the
  layer's spikes pass through identity relays (``Sparse`` + ``LIF``, one step)
  that the gate inhibits with weight -1, whatever the fan-in;
- Spikformer attention ``q (k^T v)`` (a product of two activations): a host
  process (the fused ``GatedAttention`` model, ``layout='whc'``), zero latency;
- recording and readout: a host ``SpikeProbe`` per layer; logits on the host.

Tensors here are one sample, time in Lava steps; frames are ``[S, C, H, W]``
(or ``[S, C, H, W, T]``), fingerprints ``[S * T_max, 2]`` as the fused runtime.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..loihi2 import (ACT_SHIFT, BIAS_EXP, CORES_PER_CHIP, CURRENT_DECAY_OFFSET, DECAY_UNITY, MAX_BIAS_EXP, MAX_CURRENT,
                      MAX_DECAY_FIELD, MAX_DELAY, NEURONS_PER_CORE, SYNAPSES_PER_CORE, input_bounds, message_bits,
                      bias_split, reset_interval)
from .lava_runtime import _frame_layout, _record, _source, execute, run_config
from .netx_file import NetSpec

# identity stage: the current forgets everything (du 4095 + offset 1 = 4096) and the voltage keeps
# 1/4096 (truncated to 0): spike iff an input spike arrived
RELAY = dict(du=DECAY_UNITY - CURRENT_DECAY_OFFSET, dv=MAX_DECAY_FIELD, vth=0)


@dataclass
class Edge:
    """One summand of a layer's input: resolved source layer ``src`` (flatten
    skipped), its delay in steps and how the delay is made."""
    src: int
    delay: int
    via: str = ''            # '', 'relay' (identity stages), 'DelayDense'


@dataclass
class Stage:
    """One layer of the plan. ``offset``: Lava steps before its neurons compute
    window step 0; ``gate``: ``(inhibition a_in, weight mantissa, weight
    exponent, ring phases)`` of the inhibited neurons (the layer's own, or its
    relay's); ``gate_mode``: ``'inhibit'`` (the layer's neurons are inhibited),
    ``'relay'`` (a relay stage after the layer is, one step later) or ``''``."""
    index: int
    name: str
    type: str
    shape: tuple             # (C, H, W) or (N,)
    offset: int
    edges: list = field(default_factory=list)
    active_steps: int = 0
    gate: tuple | None = None
    gate_mode: str = ''

    @property
    def out_offset(self) -> int:
        """Offset of the layer's (gated) output spikes: one more with a relay gate."""
        return self.offset + (self.gate_mode == 'relay')


@dataclass
class LoihiPlan:
    spec: NetSpec
    t_max: int
    period: int
    stages: dict             # layer index -> Stage (input, conv, dense, attention)
    relays: dict             # source index -> relay stages needed
    input_max: int
    readout_sources: list

    @property
    def max_offset(self) -> int:
        return max(s.out_offset for s in self.stages.values())

    @property
    def gated(self) -> list:
        return [s for s in self.stages.values() if s.gate]

    def num_steps(self, num_samples: int) -> int:
        return num_samples * self.period + self.max_offset


def lava_shape(shape) -> tuple:
    """Lava layout of one sample: ``(C, H, W) -> (W, H, C)``, ``(N,)`` unchanged."""
    return tuple(shape)[::-1]


def _current_bounds(spec, layer, value_max):
    """Per output channel ``(max, min)`` synaptic input (``a_in`` units) over all
    edges, for inputs in ``0..value_max[src]``."""
    w = np.asarray(layer.params['weight'], dtype=np.int64)
    return input_bounds(w, sum(value_max[_source(spec, j)] for j in layer.inputs))


GATE_MODES = ('auto', 'inhibit', 'relay')


def _inhibition(need: int):
    """``(mantissa, exponent)`` of the least 8-bit-mantissa inhibitory weight ``>= need``."""
    exp = 0
    while -(-need // (1 << exp)) > 255:
        exp += 1
    return -(-need // (1 << exp)), exp


def plan(spec: NetSpec, t_max: int, input_max: int = None, gating: bool = True,
         gate: str = 'auto') -> LoihiPlan:
    """Offsets, delays, period and gates of the standard-process build of ``spec``
    for windows of ``t_max`` steps and inputs in ``0..input_max`` (default: the
    input layer's scale). ``gate``: how a gated layer is silenced after its active
    steps (``docs/loihi.md``): ``'inhibit'`` its own neurons with a current above
    its largest input (no extra step; needs ``iDecay = 4096`` and a current that
    stays inside 24 bits, which fails at large fan-in), ``'relay'`` a relay stage
    after it (one neuron and two synapses per output, one step; works at any
    fan-in and decay), ``'auto'`` (default) inhibit where that fits, else relay.
    ``gating=False`` (diagnostics only) leaves out the DTSS gates: layers then
    spike after their active steps, which is not the trained network. Raises
    ``ValueError`` (one line) for what it cannot map."""
    from .netx_file import require_plain
    require_plain(spec, '--build loihi')
    if gate not in GATE_MODES:
        raise ValueError(f'gate {gate!r}: expected one of {", ".join(GATE_MODES)}')
    period = reset_interval(t_max)
    input_max = int(spec.layers[0].params.get('inputScale', 1) if input_max is None else input_max)
    stages, value_max, relays = {}, {0: input_max}, {}
    for i, layer in enumerate(spec.layers):
        where = f'layer {i} ({layer.type} {layer.name!r})'
        if layer.type == 'input':
            stages[i] = Stage(i, layer.name, 'input', tuple(layer.shape), 0)
            continue
        if layer.type in ('flatten', 'readout'):
            continue
        if layer.type not in ('conv', 'dense', 'attention'):
            raise ValueError(f'{where}: no Loihi mapping for layer type {layer.type!r}')
        srcs = [_source(spec, j) for j in layer.inputs]
        host = layer.type == 'attention'
        off = max(stages[r].out_offset for r in srcs) + (0 if host else 1)
        steps = min(layer.active_steps or t_max, t_max)
        st = Stage(i, layer.name, layer.type, tuple(layer.shape), off, active_steps=steps)
        for r in srcs:
            d = off - (0 if host else 1) - stages[r].out_offset
            via = '' if d == 0 else ('DelayDense' if layer.type == 'dense' and d <= MAX_DELAY else 'relay')
            if via == 'relay':
                if value_max[r] > 1:
                    raise ValueError(f'{where}: a delayed skip from the graded input layer needs '
                                     'graded relays, which this build does not make')
                relays[r] = max(relays.get(r, 0), d)
            st.edges.append(Edge(r, d, via))
        if gating and not host and steps < period:
            st.gate_mode, st.gate = _gate(spec, layer, value_max, gate, where, steps, period, off)
        stages[i] = st
        value_max[i] = 1
    last = spec.layers[-1]
    readout = ([_source(spec, j) for j in last.inputs] if last.type == 'readout'
               else [_source(spec, len(spec.layers) - 1)])
    return LoihiPlan(spec, int(t_max), period, stages, relays, input_max, readout)


def _gate(spec, layer, value_max, mode, where, steps, period, off):
    """``(gate_mode, gate)`` of a gated layer (:class:`Stage`)."""
    n = layer.neuron
    reason = ''
    if n['iDecay'] != DECAY_UNITY:
        reason = (f'the DTSS gate by inhibition needs iDecay = {DECAY_UNITY} (a current without memory), '
                  f'found {n["iDecay"]}')
    else:
        hi, lo = _current_bounds(spec, layer, value_max)
        need = int(max(0, (hi + layer.params['bias']).max()))
        if not need:
            return '', None                  # can never fire: nothing to gate
        mant, exp = _inhibition(need)
        if int(lo.min()) - (mant << exp) <= -MAX_CURRENT:
            reason = (f'gate inhibition {mant << exp} plus the most negative input {int(lo.min())} '
                      'would wrap the 24-bit current')
    if mode == 'inhibit' and reason:
        raise ValueError(f'{where}: {reason} (the relay gate has no such limit)')
    if mode == 'relay' or reason:
        # the relay neurons compute window step t at off + 1 + s*P + t + 1; their input is one spike (1)
        return 'relay', (1, 1, 0, sorted({(t + off - 1) % period for t in range(steps, period)}))
    return 'inhibit', (mant << exp, mant, exp, sorted({(t + off - 2) % period for t in range(steps, period)}))


# ------------------------------------------------------------------ build
def _lif(shape, neuron, bias, period, offset, name):
    from lava.proc.lif.process import LIFReset
    split = bias_split(bias)                     # per channel: the last axis of (W, H, C)
    if split is None:
        raise ValueError(f'layer {name!r}: its bias does not fit a 13-bit mantissa at bias_exp '
                         f'{BIAS_EXP}..{MAX_BIAS_EXP} (run_lava.py --check-loihi)')
    mant, exp = split
    return LIFReset(shape=lava_shape(shape), du=neuron['iDecay'] - CURRENT_DECAY_OFFSET, dv=neuron['vDecay'],
                    vth=neuron['vThMant'], bias_mant=np.broadcast_to(mant, lava_shape(shape)).copy(),
                    bias_exp=exp, reset_interval=period, reset_offset=(offset + 1) % period, name=name)


def _dense(weight, bits, delay=0, name=None):
    """Dense (DelayDense when delayed) with 8-bit signed ``weight`` stored as ``2 w``
    at ``weight_exp = -1`` (the mixed-sign format drops the LSB)."""
    from lava.proc.dense.process import DelayDense, Dense
    from lava.utils.weightutils import SignMode
    kw = dict(weights=2 * np.asarray(weight, dtype=np.int64), weight_exp=-1, sign_mode=SignMode.MIXED,
              num_message_bits=bits, name=name)
    return DelayDense(delays=int(delay), **kw) if delay else Dense(**kw)


def _flat_columns(shape) -> np.ndarray:
    """For a ``(C, H, W)`` source: the C-major (our) index of each position of
    Lava's ``(W, H, C)`` flattening."""
    return np.arange(int(np.prod(shape))).reshape(shape).transpose(2, 1, 0).reshape(-1)


def build(p: LoihiPlan, frames: np.ndarray):
    """Lava processes of plan ``p`` fed with integer ``frames`` (``[S, C, H, W]``
    or ``[S, C, H, W, T]``, T = ``p.t_max``). Returns ``(procs, probes)``:
    every process (the input first) and the ``SpikeProbe`` of each layer by name."""
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF
    from lava.proc.sparse.process import Sparse
    from lava.utils.weightutils import SignMode
    import scipy.sparse
    from ..lava_processes.process import GatedAttention, SpikeProbe

    spec, period, t_max = p.spec, p.period, p.t_max
    s_count = frames.shape[0]
    num_steps = p.num_steps(s_count)
    in_shape = tuple(spec.layers[0].shape)
    data = np.zeros(lava_shape(in_shape) + (num_steps,), dtype=np.int32)
    for s in range(s_count):
        for t in range(t_max):
            x = frames[s, ..., t] if frames.ndim == len(in_shape) + 2 else frames[s]
            data[..., s * period + t] = np.asarray(x).transpose(tuple(range(x.ndim))[::-1])
    procs = [RingBuffer(data=data)]
    out = {0: procs[0].s_out}
    relay_ports = {}

    def relay(src_port, shape, name):
        """An identity stage fed by ``src_port``: a ``Sparse`` identity (one synapse
        per neuron) into a ``LIF`` with threshold 0; spikes one step later."""
        syn = Sparse(weights=scipy.sparse.identity(int(np.prod(shape)), dtype=np.int64, format='csr'),
                     name=f'{name}.syn')
        lif = LIF(shape=shape, name=name, **RELAY)
        (src_port.flatten() if len(shape) > 1 else src_port).connect(syn.s_in)
        (syn.a_out.reshape(shape) if len(shape) > 1 else syn.a_out).connect(lif.a_in)
        procs.extend([syn, lif])
        return lif

    def port(r, d):
        """Spikes of layer ``r`` (gated) delayed by ``d`` relay stages."""
        if d == 0:
            return out[r]
        if (r, d) not in relay_ports:
            relay_ports[r, d] = relay(port(r, d - 1), lava_shape(p.stages[r].shape),
                                      f'{p.stages[r].name}.relay{d}').s_out
        return relay_ports[r, d]

    probes, neurons = {}, {}
    bits = {i: (message_bits(p.input_max) if st.type == 'input' else 0) for i, st in p.stages.items()}
    for i, st in p.stages.items():
        if st.type == 'input':
            continue
        layer = spec.layers[i]
        if st.type == 'attention':
            proc = GatedAttention(shape=st.shape, heads=layer.params['heads'], weight=layer.params['weight'],
                                  neuron=layer.neuron, t_max=period, active_steps=st.active_steps,
                                  gating=True, num_samples=s_count, num_steps=num_steps, batch=1,
                                  name=st.name, layout='whc', offset=st.offset)
            for e, inport in zip(st.edges, (proc.q_in, proc.k_in, proc.v_in)):
                (port(e.src, e.delay)).connect(inport)
            procs.append(proc)
        else:
            proc = _lif(st.shape, layer.neuron, layer.params['bias'], period, st.offset, st.name)
            procs.append(proc)
            w = np.asarray(layer.params['weight'], dtype=np.int64)
            for k, e in enumerate(st.edges):
                src_shape = p.stages[e.src].shape
                name = f'{st.name}.syn{k}'
                if st.type == 'conv':
                    syn = Conv(weight=w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1), input_shape=lava_shape(src_shape),
                               padding=layer.params['padding'], stride=layer.params['stride'],
                               num_message_bits=bits[e.src], name=name)
                    src = port(e.src, e.delay if e.via == 'relay' else 0)
                else:
                    cols = _flat_columns(src_shape) if len(src_shape) == 3 else slice(None)
                    syn = _dense(w[:, cols], bits[e.src], e.delay if e.via == 'DelayDense' else 0, name)
                    src = port(e.src, e.delay if e.via == 'relay' else 0)
                    src = src.flatten() if len(src_shape) == 3 else src
                src.connect(syn.s_in)
                syn.a_out.connect(proc.a_in)
                procs.append(syn)
        if st.gate_mode == 'relay':        # the gate inhibits a relay after the layer (AND stage)
            proc = relay(proc.s_out, lava_shape(st.shape), f'{st.name}.gate')
        out[i], neurons[i] = proc.s_out, proc
        probe = SpikeProbe(shape=lava_shape(st.shape), layout='whc' if len(st.shape) == 3 else 'flat',
                           offset=st.out_offset, period=period, t_max=t_max, num_samples=s_count,
                           num_steps=num_steps, name=f'{st.name}.probe')
        proc.s_out.connect(probe.a_in)
        probes[st.name] = probe
        procs.append(probe)
    gated = p.gated
    if gated:
        # timer: neuron 0 counts its bias (64 per step: bias 1 << BIAS_EXP) to (P-1) << 6 and fires every P
        # steps from step 1 on; neuron j relays it j steps later (shift weights P > P-1)
        bias = np.zeros(period, np.int64)
        bias[0] = 1
        v0 = np.zeros(period, np.int64)
        v0[0] = (period - 1) << ACT_SHIFT
        ring = LIF(shape=(period,), du=RELAY['du'], dv=0, vth=period - 1, bias_mant=bias, bias_exp=BIAS_EXP,
                   v=v0, name='dtss.timer')
        shift = Dense(weights=np.eye(period, k=-1, dtype=np.int64) * period, name='dtss.timer.shift')
        ring.s_out.connect(shift.s_in)
        shift.a_out.connect(ring.a_in)
        # gate neuron g fires one step after any ring neuron of its phases fired
        sel = np.zeros((len(gated), period), np.int64)
        for g, st in enumerate(gated):
            sel[g, st.gate[3]] = 1
        gates = LIF(shape=(len(gated),), name='dtss.gates', **RELAY)
        select = Dense(weights=sel, name='dtss.gates.select')
        ring.s_out.connect(select.s_in)
        select.a_out.connect(gates.a_in)
        procs.extend([ring, shift, gates, select])
        for g, st in enumerate(gated):
            _, mant, exp, _ = st.gate
            w = np.zeros((int(np.prod(st.shape)), len(gated)), np.int64)
            w[:, g] = -mant
            inh = Dense(weights=w, weight_exp=exp, sign_mode=SignMode.INHIBITORY, name=f'{st.name}.inhibit')
            gates.s_out.connect(inh.s_in)
            inh.a_out.reshape(lava_shape(st.shape)).connect(neurons[st.index].a_in)
            procs.append(inh)
    return procs, probes


@dataclass
class LoihiResult:
    """Outcome of a standard-process run: ``logits [S, K]``, ``fingerprints``
    ``{layer: [S * T_max, 2]}`` (aligned to window steps: offsets removed),
    ``offsets`` per layer (Lava steps), ``period`` P, ``num_steps`` (S * P + max offset),
    ``plan`` (what was built)."""
    logits: np.ndarray
    fingerprints: dict
    offsets: dict
    period: int
    num_steps: int
    processes: int
    wall_s: float
    startup_s: float
    spikes_per_step: dict = field(default_factory=dict)
    plan: LoihiPlan | None = None

    @property
    def predictions(self):
        return np.argmax(self.logits, axis=1)


def run(spec: NetSpec, frames: np.ndarray, t_max: int = None, backend: str = 'cpu',
        gating: bool = True, gate: str = 'auto', lava_conv: bool = False,
        deadline_s: float = None) -> LoihiResult:
    """Run the standard-process build of ``spec`` on integer ``frames``
    (``[S, C, H, W]``, or ``[S, C, H, W, T]``), one sample per window of
    ``P = reset_interval(T_max)`` Lava steps (``lava_dtss.loihi2``); always stopped.
    On the CPU, Lava's ``Conv`` processes run the vectorised model of
    ``lava_processes.conv_models`` (the same integers, one matrix product per
    step); ``lava_conv=True`` keeps lava-nc's own (seconds per step at 384 channels).
    ``deadline_s``: wall-clock bound of the Lava run (default ``lava_runtime.default_deadline``)."""
    frames = np.asarray(frames)
    t_max = _frame_layout(spec, frames, t_max)
    if frames.size and (frames.min() < 0 or np.any(frames != np.round(frames))):
        raise ValueError('frames must hold non-negative integers (graded input spikes)')
    cfg = run_config(backend)
    if backend == 'cpu' and not lava_conv:
        from lava.proc.conv.process import Conv
        from ..lava_processes.conv_models import PyConvModelFixedVectorized
        cfg.exception_proc_model_map[Conv] = PyConvModelFixedVectorized
    p = plan(spec, t_max, input_max=max(1, int(frames.max()) if frames.size else 1), gating=gating, gate=gate)
    procs, probes = build(p, frames.astype(np.int64))
    num_steps = p.num_steps(frames.shape[0])

    def collect():
        return {n: (_record(q.fingerprint_rec).astype(np.int64), _record(q.counts_rec).astype(np.int64))
                for n, q in probes.items()}
    recs, wall_s, startup_s = execute(procs[0], cfg, num_steps, collect, deadline_s)
    fps = {n: r[0] for n, r in recs.items()}
    last = spec.layers[-1]
    if last.type == 'readout':
        weight, bias = last.params['weight'].astype(np.int64), last.params['bias'].astype(np.int64)
    else:
        n = int(np.prod(p.stages[p.readout_sources[0]].shape[:1]))
        weight, bias = np.eye(n, dtype=np.int64), np.zeros(n, np.int64)
    counts = sum(recs[p.stages[r].name][1] for r in p.readout_sources)
    logits = counts @ weight.T + bias
    per_step = {n: float(fp[:, 0].mean()) for n, fp in fps.items()}
    return LoihiResult(logits=logits, fingerprints=fps, offsets={s.name: s.out_offset for s in p.stages.values()},
                       period=p.period, num_steps=num_steps, processes=len(procs), wall_s=wall_s,
                       startup_s=startup_s, spikes_per_step=per_step, plan=p)


def plan_for(spec: NetSpec, t_max: int, source: str) -> LoihiPlan:
    """:func:`plan`, with what cannot be mapped as one error naming ``source``
    (the file): also a threshold beyond Loihi 2's 17-bit ``vThMant`` or weights
    beyond its 8-bit mantissa (a stock file can hold both; Lava's standard
    processes would take them and compute something no chip can)."""
    from .loihi_check import check_network
    from .netx_file import require_plain
    try:
        require_plain(spec, '--build loihi')
        for c in check_network(spec):
            hard = [v for v in c.violations if v.startswith(('vThMant', 'weights in'))]
            if hard:
                raise ValueError(f'layer {c.name}: {hard[0]}; --build loihi maps to Loihi 2 processes '
                                 '(--check-loihi lists every limit; --build fused runs the file as it is)')
        return plan(spec, t_max)
    except ValueError as e:
        raise ValueError(f'{source}: {e}') from None


def run_and_compare(spec: NetSpec, images, labels, frames: np.ndarray, *, t_max: int, backend: str = 'cpu',
                    model: str = '', dataset: str = '', command: str = '', log=print):
    """``run_lava.py --build loihi``: :func:`run` on ``frames`` (the direct-encoded
    ``images``), compared with training-side inference (our files). Returns
    ``(report, {'loihi': LoihiResult})``, the report as ``run_lava.py --json``
    writes it."""
    log(f'running {len(frames)} samples on Lava ({backend}, standard-process build, '
        f'one sample per window) ...')
    res = run(spec, frames, t_max=t_max, backend=backend)
    pred = res.predictions
    report = {'model': model, 'dataset': dataset, 'num_samples': len(frames), 't_max': t_max,
              'backend': backend, 'build': 'loihi', 'accuracy': float((pred == labels).mean()),
              'processes': res.processes, 'period': res.period, 'lava_steps': res.num_steps,
              'offsets': res.offsets, 'wall_s': round(res.wall_s, 3), 'startup_s': round(res.startup_s, 3),
              'command': command}
    if 'config' in spec.meta:
        from .reference import reference_run
        ref_logits, ref_fps = reference_run(spec, images)
        differing = [n for n in ref_fps if not np.array_equal(ref_fps[n], res.fingerprints[n])]
        report['agreement'] = {'predictions': float((ref_logits.argmax(1) == pred).mean()),
                               'logits_equal': bool(np.array_equal(ref_logits, res.logits)),
                               'spikes_equal_all_layers': not differing, 'layers_differing': differing}
    else:
        report['agreement'] = None
    return report, {'loihi': res}


# ------------------------------------------------------------------ reports
def resources(p: LoihiPlan, spikes_per_step: dict = None) -> list:
    """Per part of the build: ``where`` ('chip' or 'host'), neurons, synapses
    (connections), weights stored, input axons, delay (steps), cores (neuro
    cores: the larger of the neuron and synapse bounds of ``lava_dtss.loihi2``),
    ``traffic`` (host <-> chip bits per Lava step) and a note.
    ``spikes_per_step``: measured mean spikes per step by layer (optional)."""
    spec, rows = p.spec, []

    def cores(n, syn):
        return max(math.ceil(n / NEURONS_PER_CORE), math.ceil(syn / SYNAPSES_PER_CORE), 1)
    size = {i: int(np.prod(st.shape)) for i, st in p.stages.items()}
    in_bits = message_bits(p.input_max) or 1
    rows.append(dict(name='input', where='host', neurons=0, synapses=0, weights=0, axons=0, delay=0,
                     cores=0, traffic=size[0] * in_bits,
                     note=f'RingBuffer: {size[0]} values of {in_bits} bits per step to the chip'))
    for i, st in p.stages.items():
        if st.type == 'input':
            continue
        layer, n = spec.layers[i], size[i]
        if st.type == 'attention':
            ev = ''
            if spikes_per_step:
                q, k, v = (spikes_per_step.get(p.stages[e.src].name, 0) for e in st.edges)
                ev = (f'; measured {q + k + v:.1f} q/k/v events in and '
                      f'{spikes_per_step.get(st.name, 0):.1f} out per step')
            rows.append(dict(name=st.name, where='host', neurons=n, synapses=0, weights=0, axons=3 * n,
                             delay=0, cores=0, traffic=4 * n,
                             note=f'q (k^T v) on the host: {3 * n} spike bits in, {n} out per step{ev}'))
            continue
        w = np.asarray(layer.params['weight'])
        fan_in = int(np.prod(w.shape[1:]))
        syn = n * fan_in * len(st.edges)
        axons = sum(size[e.src] for e in st.edges)
        note = f'LIFReset(P={p.period}, reset_offset {(st.offset + 1) % p.period}), {len(st.edges)} ' \
               f'{"Conv" if st.type == "conv" else "Dense"} edge(s)'
        if st.gate_mode == 'inhibit':
            syn, axons = syn + n, axons + 1
            note += f'; gate: steps {st.active_steps}..{p.period - 1} inhibited ({st.gate[0]} a_in)'
        elif st.gate_mode == 'relay':
            note += f'; gate: relay stage {st.name}.gate'
        delays = [e for e in st.edges if e.via == 'DelayDense']
        if delays:
            note += f'; DelayDense {max(e.delay for e in delays)} step(s)'
        rows.append(dict(name=st.name, where='chip', neurons=n, synapses=syn, weights=int(w.size) * len(st.edges),
                         axons=axons, delay=max([e.delay for e in delays] or [0]), cores=cores(n, syn),
                         traffic=0, note=note))
        if st.gate_mode == 'relay':
            rows.append(dict(name=f'{st.name}.gate', where='chip', neurons=n, synapses=2 * n, weights=2 * n,
                             axons=n + 1, delay=1, cores=cores(n, 2 * n), traffic=0,
                             note=f'relay gate: identity + inhibition (1 a_in) at steps '
                                  f'{st.active_steps}..{p.period - 1}, +1 step'))
    for r, d in sorted(p.relays.items()):
        n = size[r] * d
        rows.append(dict(name=f'{p.stages[r].name}.relay', where='chip', neurons=n, synapses=n,
                         weights=size[r] * d, axons=n, delay=d, cores=cores(n, n), traffic=0,
                         note=f'{d} identity stage(s) delaying a skip path'))
    if p.gated:
        n = p.period + len(p.gated)
        syn = (p.period - 1) + sum(len(st.gate[3]) for st in p.gated)
        rows.append(dict(name='dtss.timer+gates', where='chip', neurons=n, synapses=syn, weights=syn,
                         axons=n, delay=0, cores=1, traffic=0,
                         note=f'ring of {p.period} neurons and {len(p.gated)} gate neurons'))
    bits = sum(size[r] for r in p.readout_sources)
    rows.append(dict(name='readout', where='host', neurons=0, synapses=0, weights=0, axons=0, delay=0,
                     cores=0, traffic=bits, note=f'spikes of {len(p.readout_sources)} layer(s) to the host '
                                                 '(or on-chip counters read once per window)'))
    return rows


def format_resources(p: LoihiPlan, spikes_per_step: dict = None) -> str:
    rows = resources(p, spikes_per_step)
    lines = [f'standard-process (Loihi 2) build: window P = {p.period} Lava steps for T_max = {p.t_max}'
             f'{"" if p.period == p.t_max else " (padded to a power of two)"}, pipeline depth '
             f'{p.max_offset} steps',
             f'{"part":26s} {"where":5s} {"neurons":>8s} {"synapses":>9s} {"weights":>8s} {"axons":>7s} '
             f'{"delay":>5s} {"cores":>5s} {"bits/step":>9s}  note']
    for r in rows:
        lines.append(f'{r["name"]:26s} {r["where"]:5s} {r["neurons"]:8d} {r["synapses"]:9d} {r["weights"]:8d} '
                     f'{r["axons"]:7d} {r["delay"]:5d} {r["cores"]:5d} {r["traffic"]:9d}  {r["note"]}')
    chip = [r for r in rows if r['where'] == 'chip']
    n, syn, c = (sum(r[k] for r in chip) for k in ('neurons', 'synapses', 'cores'))
    traffic = sum(r['traffic'] for r in rows)
    lines.append(f'chip: {n} neurons, {syn} synapses, {c} cores (a Loihi 2 chip has {CORES_PER_CHIP}: '
                 f'{"fits one chip" if c <= CORES_PER_CHIP else f"{math.ceil(c / CORES_PER_CHIP)} chips"}); '
                 f'host <-> chip: {traffic} bits ({traffic / 8:.0f} bytes) per Lava step, dense upper bound')
    return '\n'.join(lines)


def dry_run(p: LoihiPlan, num_samples: int, backend: str) -> str:
    """The run a chip would get, in words (built without lava-loihi)."""
    from lava.magma.core.run_configs import Loihi2HwCfg
    cfg = Loihi2HwCfg(select_tag='fixed_pt') if backend == 'loihi2' else None
    lines = [f'dry run of the standard-process build for {backend}: '
             f'{type(cfg).__name__ if cfg else "Loihi2SimCfg"}(select_tag=\'fixed_pt\'), '
             f'{p.num_steps(num_samples)} Lava steps ({num_samples} samples x P = {p.period} + depth '
             f'{p.max_offset})',
             'on neuro-cores: Conv/Dense/DelayDense synapses, LIFReset layers, relay LIFs, DTSS timer and '
             'gates; on the host (Python models): input RingBuffer, hybrid attention, SpikeProbes, readout']
    for st in p.stages.values():
        if st.type == 'input':
            continue
        lines.append(f'  {st.name:24s} {st.type:9s} offset {st.offset:2d}  steps {st.active_steps}/{p.t_max}  '
                     + ('host' if st.type == 'attention' else
                        f'LIFReset(reset_interval={p.period}, reset_offset={(st.offset + 1) % p.period})')
                     + ''.join(f'  <- {p.stages[e.src].name}' + (f' +{e.delay} ({e.via})' if e.delay else '')
                               for e in st.edges))
    return '\n'.join(lines)
