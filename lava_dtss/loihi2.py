"""Loihi 2's integer conventions and limits, the fixed-point CUBA-LIF and sigma-delta steps.

Every hardware fact the package uses is defined here, once: the export scales
to these limits, the file reader and the Loihi check test against them, the
Lava process models and the standard-process build compute with them, and the
training-side neuron (``lava_dtss.model.neuron``, its compiled loop) is tied to
:func:`lif_step` by ``tests/test_neuron.py``, :func:`lif_step` to Lava's own
``PyLifModelBitAcc`` and :func:`sigma_delta_step` to Lava's fixed-point
sigma-delta models by ``tests/test_lava.py``.

Sources, cited beside each fact:

[lava]    lava-nc 0.10.0, ``lava/proc/lif/models.py``: ``AbstractPyLifModelFixed``
          and ``PyLifModelBitAcc``, Lava's CPU model of the LIF neuron,
          bit-accurate to the chip (state widths, shifts, decays, wrap and clip).
[netx]    lava-dl 0.6.0, ``lava/lib/dl/netx/hdf5.py``: how NetX maps a file's
          CUBA neuron onto Lava's ``LIF`` (``du = iDecay - 1``, ``dv = vDecay``,
          ``bias_exp = 6``) and clamps delays to 0..62.
[sdn]     lava-nc 0.10.0, ``lava/proc/sdn/models.py`` and ``process.py``: the
          fixed-point sigma-delta models (``PySigmaDeltaModelFixed``,
          ``PyDeltaModelFixed``, ``PySigmaModelFixed``) and their constructors'
          scaling of ``vth`` and ``bias`` by ``1 << (spike_exp + state_exp)``.
[slayer]  lava-dl 0.6.0, ``lava/lib/dl/slayer/neuron/cuba.py``: the training
          side's weight scale ``1 << 6``, state scale ``scale << 6`` and
          threshold test ``v >= theta + 0.01 / s_scale`` ("Loihi spikes if
          voltage > vth").
[weights] lava-nc 0.10.0, ``lava/utils/weightutils.py``: 8-bit weight mantissa
          with a shared exponent.
[notes]   the project's design notes, section 5 (Loihi 2 through lava-loihi:
          8-bit weights with a shared exponent, 24-bit u/v, 12-bit decays,
          13-bit bias mantissa, threshold mantissa << 6, delays <= 62, reset
          interval a power of two).
[brief]   Intel Labs, "Taking Neuromorphic Computing to the Next Level with
          Loihi 2", technology brief (2021): 128 neuro cores, up to 1 M neurons
          and up to 120 M synapses per chip; its comparison table gives 192 KB
          of memory per core with a flexible allocation (Loihi 1: 208 KB, fixed)
          -- the per-core figure as we read the brief, not re-checked online here.
[loihi1]  Davies et al., "Loihi: A Neuromorphic Manycore Processor with On-Chip
          Learning", IEEE Micro 38(1), 2018, Table 1 (Loihi 1, 14 nm): 23.6 pJ
          per synaptic spike operation (min), 52 pJ per active neuron update,
          3.5 ns per synaptic spike operation (max), 8.4 ns per active neuron
          update, mesh-wide barrier synchronisation 113-465 ns (1-32 tiles);
          4,096 input axons per core. Loihi 2 has not published figures at this
          granularity: the budget uses these as estimates (assumption).
[assume]  This project's assumptions, labelled where used.

Units: a weight, bias or threshold of SLAYER value ``x`` is the integer
``64 x`` (:data:`WEIGHT_SCALE`); in the neuron the synaptic input and the
threshold are shifted left by :data:`ACT_SHIFT` and the bias by
:data:`BIAS_EXP` (6 bits each), so the state ``u``, ``v`` counts
:data:`STATE_SCALE` = 4096 per SLAYER unit.
"""
from __future__ import annotations

import math

import numpy as np

# ------------------------------------------------------------------ scales
ACT_SHIFT = 6                             # [lava] act_shift, vth_shift: input and threshold MSB-aligned by 6 bits
WEIGHT_SCALE = 1 << ACT_SHIFT             # [slayer] scale = 1 << 6: SLAYER value x -> integer 64 x
STATE_SCALE = WEIGHT_SCALE << ACT_SHIFT   # [slayer] s_scale = scale << 6 = 4096 state units per SLAYER unit
THRESHOLD_EPS = 0.01 / STATE_SCALE        # [slayer] threshold_eps: SLAYER's v >= theta + eps is Loihi's v > theta

# ------------------------------------------------------------------ weights
WEIGHT_MANTISSA_BITS = 8                  # [weights], [notes] signed 8-bit mantissa, one exponent per process
MAX_WEIGHT = (1 << (WEIGHT_MANTISSA_BITS - 1)) - 1   # 127: the export writes |w| <= 127 (exponent 0)
MIN_WEIGHT = -(1 << (WEIGHT_MANTISSA_BITS - 1))      # -128: the reader's lower bound

# ------------------------------------------------------------------ threshold and bias
VTH_MANT_BITS = 17                        # [lava] PyLifModelBitAcc vth: unsigned 17 bits (0 to 131071)
MAX_VTH = (1 << VTH_MANT_BITS) - 1
BIAS_MANT_BITS = 13                       # [lava] bias_mant: signed 13 bits (-4096 to 4095)
MAX_BIAS = (1 << (BIAS_MANT_BITS - 1)) - 1
MIN_BIAS = -(1 << (BIAS_MANT_BITS - 1))
BIAS_EXP = 6                              # [netx] bias_exp = 6: the bias mantissa is aligned like the input
MAX_BIAS_EXP = 7                          # [lava] PyLifModelBitAcc bias_exp: unsigned 3 bits (0 to 7)
# A file's bias b means v += b << BIAS_EXP. On the chip it is bias_mant << bias_exp with one exponent per
# layer: bias_exp 7 takes b = 2 m (m 13 bits), so a layer's file biases span twice the mantissa's range
# when they are all even (bias_split). The export uses it when the bias, not the weights, would bind.
BIAS_RANGE_SHIFT = MAX_BIAS_EXP - BIAS_EXP
MAX_FILE_BIAS = MAX_BIAS << BIAS_RANGE_SHIFT    # 8190
MIN_FILE_BIAS = MIN_BIAS << BIAS_RANGE_SHIFT    # -8192

# ------------------------------------------------------------------ decays
DECAY_BITS = 12                           # [lava] du, dv: unsigned 12 bits (0 to 4095)
DECAY_SHIFT = 12                          # [lava] decay_shift: state * (4096 - decay) >> 12, toward zero
DECAY_UNITY = 1 << DECAY_SHIFT            # 4096: a decay of 4096 forgets the state in one step
MAX_DECAY_FIELD = (1 << DECAY_BITS) - 1   # 4095: the largest du, dv of Lava's LIF
MAX_DECAY = DECAY_UNITY                   # the range files and the reader accept, iDecay and vDecay in 0..4096
CURRENT_DECAY_OFFSET = 1                  # [lava] ds_offset = 1 (dm_offset = 0); [netx] passes du = iDecay - 1
# 4096 is NOT a 12-bit value. Lava's current decay adds a 1-bit offset, so iDecay 1..4096 is du 0..4095;
# the voltage decay has none, so vDecay = 4096 has no 12-bit encoding (and iDecay = 0 none either). Files
# here keep the range 0..4096 for both, as NetX's reader and our models do; --check-loihi reports a
# decay outside the range Loihi 2 represents (below) as a violation.
I_DECAY_RANGE = (CURRENT_DECAY_OFFSET, MAX_DECAY_FIELD + CURRENT_DECAY_OFFSET)   # iDecay 1..4096: du = iDecay - 1
V_DECAY_RANGE = (0, MAX_DECAY_FIELD)                                             # vDecay 0..4095: dv = vDecay


def bias_split(bias):
    """``(mantissa, bias_exp)`` of a layer's file biases (integers; ``v += b << BIAS_EXP``) on
    Loihi 2: the least ``bias_exp`` in ``BIAS_EXP .. MAX_BIAS_EXP`` with every ``b`` a multiple of
    ``2**(bias_exp - BIAS_EXP)`` and ``b >> (bias_exp - BIAS_EXP)`` a 13-bit mantissa;
    ``None`` when there is none (the layer does not fit)."""
    b = np.asarray(bias, dtype=np.int64)
    for shift in range(BIAS_RANGE_SHIFT + 1):
        if np.all(b % (1 << shift) == 0):
            mant = b >> shift
            if mant.min(initial=0) >= MIN_BIAS and mant.max(initial=0) <= MAX_BIAS:
                return mant, BIAS_EXP + shift
    return None


def quantize_bias(bias):
    """Nearest file biases (int64 numpy) to real ones (file units, a torch tensor or an array
    with ``|b| <= MAX_FILE_BIAS``) that :func:`bias_split` represents, with the least exponent:
    ``round(b)`` when that fits the 13-bit mantissa, else ``2 round(b / 2)``."""
    import torch
    b = torch.as_tensor(bias, dtype=torch.float64)
    for shift in range(BIAS_RANGE_SHIFT + 1):
        q = torch.round(b / (1 << shift)).to(torch.int64)
        if q.numel() == 0 or MIN_BIAS <= int(q.min()) and int(q.max()) <= MAX_BIAS:
            return (q << shift).numpy()
    raise ValueError(f'bias up to {float(b.abs().max()):.1f} exceeds {MAX_FILE_BIAS}, the largest '
                     f'{BIAS_MANT_BITS}-bit mantissa at bias_exp {MAX_BIAS_EXP}')


def current_shift_is_voltage_bias(i_decay: int) -> bool:
    """Whether a constant added to the synaptic current each step (where
    training applies BatchNorm's shift) equals the same constant as Loihi's
    voltage bias (what the export writes): only when the current keeps nothing
    from one step to the next, ``iDecay == 4096`` (SLAYER's current decay 1).
    With any other decay the current sums the shift over steps."""
    return int(i_decay) == DECAY_UNITY


# ------------------------------------------------------------------ state
STATE_BITS = 24                           # [lava] uv_bitwidth: u and v are 24-bit signed
MAX_UV = 1 << (STATE_BITS - 1)            # [lava] max_uv_val = 2**23: u wraps beyond it, v clips to +-(2**23 - 1)
MAX_CURRENT = MAX_UV >> ACT_SHIFT         # 2**17: |a_in| below which a_in << 6 fits the 24-bit current

# ------------------------------------------------------------------ time, cores (docs/loihi.md "Chip budget")
MAX_DELAY = 62                            # [netx] delays clamped to 0..62; [notes] delays <= 62
CORES_PER_CHIP = 128                      # [brief] 128 neuro cores per chip
NEURONS_PER_CHIP = 1 << 20                # [brief] up to 1 M neurons per chip
NEURONS_PER_CORE = NEURONS_PER_CHIP // CORES_PER_CHIP   # 8192: [brief] spread evenly over the cores (derived)
SYNAPSES_PER_CHIP = 120_000_000           # [brief] up to 120 M synapses per chip (compressed encodings: more than
                                          # 8-bit weights in 128 x 192 KB; a ceiling, not what a network gets)
CORE_MEMORY_BYTES = 192 * 1000            # [brief] 192 KB per core, shared by synapses, neuron state and routing
SYNAPSES_PER_CORE = 128 * 1024            # [assume] 128 KiB of a core's memory for 8-bit weights (one byte each),
                                          # the rest for up to 8k neurons' state and the axon tables
AXONS_PER_CORE = 4096                     # [loihi1] 4,096 input axons per core; [assume] the same on Loihi 2
E_SYNOP_PJ = 23.6                         # [loihi1] energy per synaptic spike operation (min)
E_NEURON_PJ = 52.0                        # [loihi1] energy per active neuron update
T_SYNOP_NS = 3.5                          # [loihi1] time per synaptic spike operation (max), per core
T_NEURON_NS = 8.4                         # [loihi1] time per active neuron update, per core
T_BARRIER_NS = 465.0                      # [loihi1] mesh-wide barrier synchronisation (32 tiles) per step
ASSUMED_FIRING_RATE = 0.1                 # [assume] spikes per neuron per step (untrained Spikformer-4-384: ~0.1)


def reset_interval(t_max: int) -> int:
    """The shortest reset interval that holds ``t_max`` steps: Loihi 2's reset
    interval is a power of two [notes]."""
    return 1 << (int(t_max) - 1).bit_length()


# ------------------------------------------------------------------ bit widths
def weight_mantissa_bits(w: np.ndarray) -> int:
    """Signed mantissa bits of the integers in ``w`` with the best shared
    exponent (weight = mantissa << exponent, exponent 0..8) [weights]."""
    w = np.asarray(w, dtype=np.int64)
    if not w.size or not np.any(w):
        return 1
    exp = 0
    while exp < 8 and not np.any(w & ((1 << (exp + 1)) - 1)):
        exp += 1
    m = w >> exp
    return max(int(m.max()).bit_length(), int(-m.min() - 1).bit_length() if m.min() < 0 else 0) + 1


def graded_bits(vmax: int) -> int:
    """Bits of an unsigned graded spike that carries the values ``0..vmax``."""
    return int(vmax).bit_length()


def message_bits(vmax: int) -> int:
    """Lava's ``num_message_bits`` for values ``0..vmax``: 0 (binary spikes)
    when ``vmax <= 1``, else :func:`graded_bits`."""
    return 0 if vmax <= 1 else graded_bits(vmax)


# ------------------------------------------------------------------ worst-case inputs and states
def input_bounds(weight: np.ndarray, input_max):
    """Per output neuron ``o``, ``(hi[o], lo[o])``: the largest and the smallest
    synaptic input ``a_in`` (integer units, before the << 6) for inputs in
    ``0..input_max`` (spikes 1, graded sums, pixels): ``input_max`` times the
    sum of the positive, and of the negative, weights of row ``o``."""
    w = np.asarray(weight)
    rows = w.reshape(w.shape[0], -1)
    return np.clip(rows, 0, None).sum(1) * input_max, np.clip(rows, None, 0).sum(1) * input_max


def worst_input(weight: np.ndarray, input_max) -> float:
    """The worst-case ``|a_in|`` of a layer whose inputs lie in ``0..input_max``
    (never negative: spikes, sums of spikes, pixels): the larger of
    :func:`input_bounds`' ``max(hi)`` and ``-min(lo)``. Every partial sum of a
    row lies in the same range."""
    hi, lo = input_bounds(weight, input_max)
    return float(max(hi.max(initial=0), -lo.min(initial=0)))


def max_abs_input(weight: np.ndarray, input_max) -> float:
    """A looser bound on ``|a_in|``, for inputs of either sign: ``max_o sum_i |w[o, i]| * input_max``."""
    w = np.abs(np.asarray(weight, dtype=np.float64))
    return float(w.reshape(w.shape[0], -1).sum(1).max()) * input_max


def state_bounds(max_input: float, max_bias: float, i_decay: int, v_decay: int):
    """``(|u|, |v|)`` bounds of a neuron whose ``|a_in|`` stays below
    ``max_input`` and ``|bias|`` below ``max_bias`` (geometric series of the
    decays): ``|u| <= (|a_in| << 6) / (1 - a_u)``, ``|v| <= (|u| + (|bias| << 6)) / (1 - a_v)``
    with ``a = decay_factor(decay)``; ``None`` where a decay keeps the whole
    state (no bound)."""
    keep_u, keep_v = decay_factor(i_decay), decay_factor(v_decay)
    if keep_u >= 1 or keep_v >= 1:
        return None
    u = (1 << ACT_SHIFT) * max_input / (1 - keep_u)
    v = (u + (1 << BIAS_EXP) * max_bias) / (1 - keep_v)
    return u, v


def state_overflow(max_input: float, max_bias: float, i_decay: int, v_decay: int):
    """``(current, voltage)``: why a neuron with ``|a_in| <= max_input`` and
    ``|bias| <= max_bias`` may leave Loihi 2's 24-bit state, from
    :func:`state_bounds`, each None when its bound stays below :data:`MAX_UV`
    (or no bound exists: a decay that keeps the whole state). ``current``: the
    current wraps past ``2**23`` (where training does not), the bound
    ``--build loihi`` applies to its gates (:data:`MAX_CURRENT` on ``a_in`` when
    the current decays fully) and the fused runtime models. ``voltage``: the
    voltage may clip at ``2**23 - 1``; a positive clip does not change a spike
    (the threshold is below it) and real inputs are far from the worst case."""
    bounds = state_bounds(max_input, max_bias, i_decay, v_decay)
    if bounds is None:
        return None, None
    u, v = bounds
    current = voltage = None
    if u >= MAX_UV:
        current = (f'worst-case current |u| {int(u)} exceeds the {STATE_BITS}-bit state (< {MAX_UV}): '
                   'it would wrap where training does not')
    if v >= MAX_UV - 1:
        voltage = (f'worst-case voltage |v| {int(v)} exceeds the {STATE_BITS}-bit state: it may clip where '
                   'training does not (run_lava.py checks exactness on real inputs)')
    return current, voltage


# ------------------------------------------------------------------ the neuron
def decay_factor(decay: int) -> float:
    """Fraction of the state kept per step, ``(4096 - decay) / 4096`` [lava]."""
    return (DECAY_UNITY - int(decay)) / DECAY_UNITY


def apply_decay(x: np.ndarray, decay: int, tmp: np.ndarray) -> None:
    """In place: ``x <- sign(y) * (|y| >> 12)``, ``y = x * (4096 - decay)``
    (rounded toward zero) [lava]; ``x`` int64, ``tmp`` int64 scratch of its shape."""
    factor = DECAY_UNITY - int(decay)
    if factor == DECAY_UNITY:
        return
    if factor == 0:
        x[...] = 0
        return
    x *= factor
    np.right_shift(x, 63, out=tmp)           # -1 where negative, else 0
    tmp &= DECAY_UNITY - 1                   # add 4095 to negatives: floor -> trunc
    x += tmp
    x >>= DECAY_SHIFT


def fires(v: np.ndarray, vth: int, out: np.ndarray = None) -> np.ndarray:
    """Loihi's threshold test [lava] ``spiking_activation``: a spike where
    ``v > vth << 6``; a voltage exactly at the threshold does not fire."""
    return np.greater(v, int(vth) << ACT_SHIFT, out=out)


def spike_level(threshold: float) -> int:
    """The same test on the training side's state (an integer held in float,
    1/4096 units): SLAYER spikes where ``v >= (threshold + THRESHOLD_EPS) * 4096``
    [slayer]; for an integer ``v`` that is ``v >= ceil(threshold * 4096 + 0.01)``,
    the integer this returns (computed in float64), so that ``v >= spike_level``
    is exact in any float that holds it (float32 below 2**24) -- the float32 sum
    ``vThMant * 64 + 0.01`` rounds back to ``vThMant * 64`` once that reaches
    2**18. For a threshold that is a whole number of 1/64 (every exported one:
    ``vThMant / 64``) it is ``(vThMant << 6) + 1``: ``v >= it`` is :func:`fires`."""
    return int(math.ceil((float(threshold) + THRESHOLD_EPS) * STATE_SCALE))


def lif_step(u, v, a_in, bias, du: int, dv: int, vth: int, tmp=None, spikes=None):
    """One step of the fixed-point CUBA-LIF neuron, Lava's ``PyLifModelBitAcc``
    [lava] with the bias exponent NetX sets (:data:`BIAS_EXP`), in the file's
    terms (``du = iDecay``, ``dv = vDecay``, ``vth = vThMant``)::

        u <- apply_decay(u, du) + (a_in << 6), wrapped once into the 24-bit range:
             u > 2**23: u - 2**24;  u <= -2**23: u + 2**24
        v <- clip(apply_decay(v, dv) + u + (bias << 6), -(2**23 - 1), 2**23 - 1)
        s <- v > vth << 6;  v <- 0 where s

    Lava's model shifts ``a_in`` in its own integer type (int32 from a
    ``Dense``); here everything is int64, the same while ``|a_in| < 2**25``.

    ``u, v``: int64 state, updated in place (C-contiguous, e.g. the first rows
    of a batch); ``a_in``: synaptic input (integers, any dtype); ``bias``: bias
    mantissa (broadcasts to ``u``); ``tmp`` (int64) and ``spikes`` (bool):
    optional scratch of ``u``'s shape. Returns the boolean spikes.
    """
    tmp = np.empty(u.shape, np.int64) if tmp is None else tmp
    spikes = np.empty(u.shape, bool) if spikes is None else spikes
    if du == DECAY_UNITY:                    # the current decays fully: u = a_in << 6
        np.multiply(a_in, 1 << ACT_SHIFT, out=u, casting='unsafe')     # exact for integers
    else:
        apply_decay(u, du, tmp)
        np.multiply(a_in, 1 << ACT_SHIFT, out=tmp, casting='unsafe')
        u += tmp
    if u.size and u.max() > MAX_UV:          # 24-bit wrap-around
        np.greater(u, MAX_UV, out=spikes)
        np.multiply(spikes, 2 * MAX_UV, out=tmp)
        u -= tmp
    if u.size and u.min() <= -MAX_UV:
        np.less_equal(u, -MAX_UV, out=spikes)
        np.multiply(spikes, 2 * MAX_UV, out=tmp)
        u += tmp
    apply_decay(v, dv, tmp)
    v += u
    v += np.asarray(bias, dtype=np.int64) << BIAS_EXP
    np.clip(v, -MAX_UV + 1, MAX_UV - 1, out=v)
    fires(v, vth, out=spikes)
    np.multiply(v, spikes, out=tmp)          # reset: v = 0 where it spiked
    v -= tmp
    return spikes


SDNN_STATE_EXP = 6    # [netx] hdf5.get_neuron_params: 'state_exp': 6 for every SDNN neuron
SDNN_SPIKE_EXP = 6    # [netx] Network(spike_exp=6) default: decimal places of a graded spike


def sigma_delta_step(sigma, act, residue, a_in, bias, vth: int, kind: str = 'sigma_delta'):
    """One step of Lava's fixed-point sigma-delta neurons as NetX builds them
    for a file's ``SDNN`` layers ([sdn] ``lava/proc/sdn/models.py``, lava-nc
    0.10.0: ``PySigmaDeltaModelFixed``, ``PyDeltaModelFixed``,
    ``PySigmaModelFixed``; ``cum_error`` off and ``act_mode`` ReLU, NetX's
    defaults; ``state_exp`` = :data:`SDNN_STATE_EXP`, ``spike_exp`` =
    :data:`SDNN_SPIKE_EXP`)::

        E = spike_exp + state_exp (12): the processes' constructors ([sdn]
        ``lava/proc/sdn/process.py``, ``SigmaDelta``, ``Delta``) store
        vth << E and bias << E
        kind 'sigma_delta' (a conv/dense layer):
            sigma <- sigma + a_in;  x <- max(sigma + (bias << E), 0)
        kind 'delta' (NetX's Input block of an SDNN file; no sigma, no bias):
            x <- a_in << (spike_exp + state_exp)
        then (both):
            delta <- x - act + residue
            s <- delta where |delta| >= vth << E, else 0
            residue <- delta - s;  act <- x
            message <- s >> state_exp (arithmetic shift: floor)
        kind 'sigma' (``neuron/sigma_output``: the output layer):
            sigma <- sigma + a_in;  message <- sigma

    ``sigma, act, residue``: int64 state, updated in place; ``a_in``:
    integers (any dtype; Lava computes in int32, here int64: the same while
    every value fits int32); ``bias`` (broadcasts to the state) and ``vth``:
    the file's mantissas (``bias`` truncated to integers as
    NetX's ``astype(np.int32)``, ``vThMant``), unshifted.
    Returns the graded message (int64)."""
    a = np.asarray(a_in).astype(np.int64)
    if kind == 'sigma':
        sigma += a
        return sigma.copy()
    e = SDNN_SPIKE_EXP + SDNN_STATE_EXP
    if kind == 'delta':
        x = a << e
    elif kind == 'sigma_delta':
        sigma += a
        x = np.maximum(sigma + (np.asarray(bias, dtype=np.int64) << e), 0)
    else:
        raise ValueError(f"kind {kind!r}: expected 'sigma_delta', 'delta' or 'sigma'")
    delta = x - act + residue
    s = np.where(np.abs(delta) >= (int(vth) << e), delta, 0)
    residue[...] = delta - s
    act[...] = x
    return s >> SDNN_STATE_EXP
