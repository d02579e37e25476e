"""Lava processes of a DTSS spiking ViT (definitions only; no side effects:
Lava's compiler imports every file in this folder).

Time and batch: every process runs ``B = batch`` samples side by side, in
windows of ``t_max`` Lava steps (global step ``g`` = 1, 2, ...; window
``w = (g - 1) // t_max``, window step ``t = (g - 1) % t_max``); window ``w``
carries samples ``w*B .. w*B + B - 1`` (the last window is padded: padded rows
are zero, neither computed nor counted). Every state and port has a leading
sample axis of size ``B``; states reset at ``t = 0``. Layers are
layer-synchronous: step ``t`` of a layer consumes step ``t`` of its inputs
(SLAYER ``delay_shift=False``). Values on ports are integers (spikes 0/1,
graded residual sums, 8-bit pixels) carried as float64, exact in these ranges.

Results leave through ``*_rec`` OutPorts flagged as external pipes (Lava's
I/O channel to the calling Python process, as ``lava.proc.io.extractor``
uses): each sends its Var once, at the last step ``num_steps``, as one
message (``Var.get()`` would send it one value per message).
"""
import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var


def _record_port(shape):
    port = OutPort(shape=shape)
    port.flag_external_pipe(buffer_size=1)
    return port


class FrameInput(AbstractProcess):
    """Input: sends ``frames[w*B:(w+1)*B]`` (``[B, C, H, W]``) at every step
    of window ``w`` (direct encoding: the same frame at every step), or
    ``frames[w*B:(w+1)*B, ..., t]`` at window step ``t`` when the frames have a
    time axis; zeros for rows past the last sample.

    frames: ``[S, C, H, W]`` or ``[S, C, H, W, T]`` integers.
    """

    def __init__(self, *, frames: np.ndarray, in_shape: tuple, t_max: int, batch: int,
                 name: str = 'input'):
        timed = frames.ndim == len(in_shape) + 2
        super().__init__(name=name, t_max=int(t_max), batch=int(batch), timed=timed)
        self.frames = Var(shape=frames.shape, init=frames)
        self.s_out = OutPort(shape=(int(batch),) + tuple(in_shape))


class _GatedNeurons(AbstractProcess):
    """Common part: CUBA-LIF (Loihi fixed point), DTSS gate, counters."""

    def _common(self, out_shape, batch, num_samples, port_shape=None):
        shape = (int(batch),) + tuple(out_shape)
        rows = int(num_samples) * int(self.proc_params['t_max'])
        self.s_out = OutPort(shape=tuple(port_shape) if port_shape else shape)
        self.u = Var(shape=shape, init=0)
        self.v = Var(shape=shape, init=0)
        self.synops = Var(shape=(1,), init=0)          # synaptic operations executed
        self.neuron_updates = Var(shape=(1,), init=0)  # neuron updates executed
        # [spike count, checksum] of sample s at window step t in row s * t_max + t
        self.fingerprint = Var(shape=(rows, 2), init=0)
        self.fingerprint_rec = _record_port((rows, 2))


class GatedLayer(_GatedNeurons):
    """Fused synapse + CUBA-LIF + DTSS gate: ``conv`` (weight ``[Co, Ci, k, k]``,
    stride, padding; input ``(B, Ci, H, W)``) or ``dense`` (weight ``[No, Ni]``;
    input ``(B, ...)`` with ``Ni`` values per sample, flattened C-major).

    After window step ``active_steps`` the layer neither accumulates input nor
    updates neurons and sends zeros (``gating=True``); with ``gating=False``
    it computes every step and zeroes the output after ``active_steps`` (the
    DTSS mask), so both give the same spikes.

    ``timing='stock'`` (batch 1, stock NetX files): the timing of stock NetX's
    ``Dense``/``Conv`` + ``LIF`` blocks. The synaptic input of Lava step ``k``
    is the synapse applied to the input received at step ``k - 1`` (zero at
    step 1), neurons update every step from step 1 (bias included, also while
    the pipeline fills), no DTSS gate; with ``reset_interval = R > 0`` u and v
    are zeroed at steps ``k`` with ``k % R == depth % R`` (NetX's
    ``reset_offset`` of the layer at ``depth``, 1 for the first), never with
    ``R = 0``; ``binary_input``: the input counts as 1 where non-zero (NetX's
    unary spikes, ``input_message_bits=0``). Fingerprint row ``k - 1`` records
    step ``k``.
    ``geometry`` (conv, optional): ``{'stride', 'padding', 'dilation'}`` as
    (H, W) pairs and ``groups``, for kernels ``[Co, Ci/groups, kh, kw]``
    (replaces ``stride``/``padding``).
    ``delay`` (stock timing, dense only): synaptic delays ``[No, Ni]`` in steps,
    as Lava's ``DelayDense``: input received at step ``k`` over a synapse of
    delay ``d`` reaches the neuron at step ``k + 1 + d``.
    ``kind='input'`` (stock timing): stock NetX's ``Input`` block, a CUBA-LIF
    neuron per input value without synapse: the value received at step ``k``
    (truncated toward zero, as Lava's integer ``a_in`` of ``LIF``) is its
    synaptic input at step ``k``; ``bias``: the bias mantissa per neuron,
    ``[Sb, *out_shape]``, row ``min(s, Sb - 1)`` during sample ``s``'s steps
    ``s*T+1 .. s*T+T`` (stock: ``net.in_layer.neuron.bias_mant``).
    ``reset_phase`` (stock timing, default ``depth``): reset at steps ``k`` with
    ``k % R == reset_phase % R`` (NetX: ``reset_offset + 1 + `` the layer's
    index among the blocks it builds).
    ``record_steps > 0``: also record the layer's output (0/1) at Lava steps
    ``1 .. record_steps`` in ``spikes [record_steps, *out_shape]``, sent once
    through ``spikes_rec`` at the last step (batch 1); with ``record_voltage``
    also the voltage ``v`` after each step (after the reset of the neurons that
    fired, as Lava's ``LIF.v``) in ``voltages`` / ``voltages_rec``.
    ``neuron['type'] == 'SDNN'`` (stock timing): the layer's neuron is the
    sigma-delta neuron NetX builds (``neuron['kind']``: ``'delta'``, the input
    block's encoder; ``'sigma_delta'``; ``'sigma'``, a sigma-output layer),
    one step of ``lava_dtss.loihi2.sigma_delta_step``; ``u`` holds its sigma,
    ``v`` its activation ``act`` (what ``record_voltage`` records), and the
    messages are graded integers.
    """

    def __init__(self, *, kind: str, in_shape: tuple, out_shape: tuple, weight: np.ndarray,
                 bias: np.ndarray, neuron: dict, t_max: int, active_steps: int,
                 gating: bool, num_samples: int, num_steps: int, batch: int = 1,
                 stride: int = 1, padding: int = 0, name: str = 'layer',
                 timing: str = 'sync', depth: int = 1, reset_interval: int = 0,
                 binary_input: bool = False, delay: np.ndarray = None, geometry: dict = None,
                 reset_phase: int = None, record_steps: int = 0, record_voltage: bool = False):
        if timing not in ('sync', 'stock') or (timing == 'stock' and int(batch) != 1):
            raise ValueError(f"timing {timing!r} with batch {batch}: expected 'sync', or 'stock' "
                             'with batch 1')
        super().__init__(name=name, kind=kind, stride=int(stride), padding=int(padding),
                         timing=timing, depth=int(depth), reset_interval=int(reset_interval),
                         binary_input=bool(binary_input), geometry=geometry,
                         reset_phase=int(depth if reset_phase is None else reset_phase),
                         record_steps=int(record_steps), record_voltage=bool(record_voltage),
                         delay=None if delay is None else np.asarray(delay, dtype=np.int64),
                         vth=int(neuron['vThMant']), du=int(neuron.get('iDecay', 0)),
                         dv=int(neuron.get('vDecay', 0)), t_max=int(t_max),
                         sdnn=neuron.get('kind') if neuron.get('type') == 'SDNN' else None,
                         active_steps=int(active_steps), gating=bool(gating),
                         num_samples=int(num_samples), num_steps=int(num_steps))
        self.a_in = InPort(shape=(int(batch),) + tuple(in_shape))
        self.weight = Var(shape=weight.shape, init=weight)
        self.bias = Var(shape=bias.shape, init=bias)
        self._common(out_shape, batch, num_samples)
        if record_steps and int(batch) != 1:
            raise ValueError(f'record_steps with batch {batch}: spikes are recorded for batch 1 only')
        rec = (max(1, int(record_steps)),) + (tuple(out_shape) if record_steps else (1,))
        self.spikes = Var(shape=rec, init=0)      # (1, 1) and never sent without record_steps
        self.spikes_rec = _record_port(rec)
        rec_v = rec if record_voltage else (1, 1)
        self.voltages = Var(shape=rec_v, init=0)
        self.voltages_rec = _record_port(rec_v)


class GatedAttention(_GatedNeurons):
    """Spiking self-attention core: ``LIF(weight * q (k^T v))`` per sample and
    head on ``(B, C, H, W)`` spikes (tokens ``H*W``, ``C/heads`` channels per
    head), then the DTSS gate.

    ``layout='whc'`` (batch 1 only): ports carry one sample as ``(W, H, C)``,
    the layout of Lava's ``Conv``/``LIF`` processes (the hybrid host process of
    ``lava_dtss.deploy.loihi_build``). ``offset``: Lava steps before window step 0 of
    the first window (the layer's pipeline offset; 0 in the fused runtime).
    """

    def __init__(self, *, shape: tuple, heads: int, weight: int, neuron: dict,
                 t_max: int, active_steps: int, gating: bool, num_samples: int,
                 num_steps: int, batch: int = 1, name: str = 'attention',
                 layout: str = 'bchw', offset: int = 0):
        if layout not in ('bchw', 'whc') or (layout == 'whc' and int(batch) != 1):
            raise ValueError(f"layout {layout!r} with batch {batch}: expected 'bchw', or 'whc' with batch 1")
        super().__init__(name=name, heads=int(heads), weight=int(weight),
                         vth=int(neuron['vThMant']), du=int(neuron['iDecay']),
                         dv=int(neuron['vDecay']), t_max=int(t_max),
                         active_steps=int(active_steps), gating=bool(gating),
                         num_samples=int(num_samples), num_steps=int(num_steps),
                         layout=layout, offset=int(offset))
        port_shape = (int(batch),) + tuple(shape) if layout == 'bchw' else tuple(shape)[::-1]
        self.q_in = InPort(shape=port_shape)
        self.k_in = InPort(shape=port_shape)
        self.v_in = InPort(shape=port_shape)
        self._common(shape, batch, num_samples, port_shape)


class Readout(AbstractProcess):
    """Class readout: per sample, ``logits = weight @ sum_{t, H, W} x + bias``
    (integers) for input ``x`` of shape ``(B, C, H, W)`` or ``(B, C)``;
    ``logits [S, K]``. ``offset``: Lava steps before window step 0 (the
    pipeline depth in stock NetX timing, else 0)."""

    def __init__(self, *, in_shape: tuple, weight: np.ndarray, bias: np.ndarray,
                 t_max: int, num_samples: int, num_steps: int, batch: int = 1,
                 name: str = 'readout', offset: int = 0):
        super().__init__(name=name, t_max=int(t_max), batch=int(batch),
                         num_steps=int(num_steps), offset=int(offset))
        self.a_in = InPort(shape=(int(batch),) + tuple(in_shape))
        self.weight = Var(shape=weight.shape, init=weight)
        self.bias = Var(shape=bias.shape, init=bias)
        self.acc = Var(shape=(int(batch), in_shape[0]), init=0)
        self.logits = Var(shape=(num_samples, weight.shape[0]), init=0)
        self.logits_rec = _record_port((num_samples, weight.shape[0]))


class SpikeProbe(AbstractProcess):
    """Host recorder of one layer's spikes in a pipelined (Lava-standard) build.

    Input ``a_in``: one sample's spikes, ``(W, H, C)`` (``layout='whc'``) or
    ``(N,)``. Window step ``t`` of sample ``s`` arrives at Lava step
    ``offset + s * period + t + 1``; steps ``t >= t_max`` (padding of the
    window to ``period``) and steps before ``offset`` are ignored.
    Records, sent once at step ``num_steps``: ``fingerprint_rec [S * t_max, 2]``
    (count, checksum of the spikes flattened C-major in ``(C, H, W)`` order,
    as the fused runtime records them) and ``counts_rec [S, C]`` (spikes per
    channel summed over positions and the ``t_max`` steps, for the readout).
    """

    def __init__(self, *, shape: tuple, layout: str, offset: int, period: int, t_max: int,
                 num_samples: int, num_steps: int, name: str = 'probe'):
        if layout not in ('whc', 'flat'):
            raise ValueError(f"layout {layout!r}: expected 'whc' or 'flat'")
        super().__init__(name=name, layout=layout, offset=int(offset), period=int(period),
                         t_max=int(t_max), num_samples=int(num_samples), num_steps=int(num_steps))
        channels = shape[-1] if layout == 'whc' else shape[0]
        rows = int(num_samples) * int(t_max)
        self.a_in = InPort(shape=tuple(shape))
        self.fingerprint = Var(shape=(rows, 2), init=0)
        self.counts = Var(shape=(int(num_samples), int(channels)), init=0)
        self.fingerprint_rec = _record_port((rows, 2))
        self.counts_rec = _record_port((int(num_samples), int(channels)))
