"""Pure numpy functions for the Lava process models: Loihi 2 fixed-point
CUBA-LIF step, integer convolution, fan-out and spike fingerprints.

Arrays are integers carried as float64 (exact below 2**53) or int64.
"""
from __future__ import annotations

import functools

import numpy as np

DECAY_SHIFT = 12
ACT_SHIFT = 6            # Loihi: synaptic input and threshold are MSB-aligned by 6 bits
MAX_UV = 1 << 23         # 24-bit signed u and v


def _decay(x: np.ndarray, decay: int, tmp: np.ndarray) -> None:
    """In place: ``x <- sign(y) * (|y| >> 12)``, ``y = x * (4096 - decay)`` (round
    toward zero); ``x`` int64, ``tmp`` int64 scratch of its shape."""
    factor = (1 << DECAY_SHIFT) - int(decay)
    if factor == 1 << DECAY_SHIFT:
        return
    if factor == 0:
        x[...] = 0
        return
    x *= factor
    np.right_shift(x, 63, out=tmp)           # -1 where negative, else 0
    tmp &= (1 << DECAY_SHIFT) - 1            # add 4095 to negatives: floor -> trunc
    x += tmp
    x >>= DECAY_SHIFT


def lif_step(u, v, a_in, bias, du: int, dv: int, vth: int, tmp=None, spikes=None):
    """One step of Lava's ``PyLifModelBitAcc`` (bias exponent 6, as NetX sets it).

    ``u, v``: int64 state, updated in place (C-contiguous, e.g. the first rows
    of a batch); ``a_in``: synaptic input (integers, any dtype); ``bias``: bias
    mantissa (broadcasts to ``u``); ``tmp`` (int64) and ``spikes`` (bool):
    optional scratch of ``u``'s shape. Returns the boolean spikes.
    """
    tmp = np.empty(u.shape, np.int64) if tmp is None else tmp
    spikes = np.empty(u.shape, bool) if spikes is None else spikes
    if du == 1 << DECAY_SHIFT:               # the current decays fully: u = a_in << 6
        np.multiply(a_in, 1 << ACT_SHIFT, out=u, casting='unsafe')     # exact for integers
    else:
        _decay(u, du, tmp)
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
    _decay(v, dv, tmp)
    v += u
    v += np.asarray(bias, dtype=np.int64) << ACT_SHIFT
    np.clip(v, -MAX_UV + 1, MAX_UV - 1, out=v)
    np.greater(v, int(vth) << ACT_SHIFT, out=spikes)
    np.multiply(v, spikes, out=tmp)          # reset: v = 0 where it spiked
    v -= tmp
    return spikes


# float32 sums integers exactly while every partial sum stays below 2**24
FLOAT32_EXACT = 1 << 24


def conv2d(a: np.ndarray, w: np.ndarray, stride: int, padding: int,
           dtype=np.float64) -> np.ndarray:
    """Cross-correlation (as torch) of ``a [B, Ci, H, W]`` (or one sample
    ``[Ci, H, W]``) with ``w [Co, Ci, k, k]``: ``[B, Co, Ho, Wo]`` (or ``[Co, Ho, Wo]``),
    one matrix product in ``dtype`` for the whole batch. Exact for integers
    when ``max_o sum |w_o| * max |a|`` is below 2**53 (float64) or
    :data:`FLOAT32_EXACT` (float32)."""
    if a.ndim == 3:
        return conv2d(a[None], w, stride, padding, dtype)[0]
    b, ci, h, wd = a.shape
    co, _, k, _ = w.shape
    w = w.reshape(co, -1).astype(dtype, copy=False)
    if k == 1 and stride == 1 and padding == 0:
        cols = np.empty((ci, b, h * wd), dtype)                                 # [Ci, B*H*W]
        np.copyto(cols, a.reshape(b, ci, -1).transpose(1, 0, 2))
        return (w @ cols.reshape(ci, -1)).reshape(co, b, h, wd).transpose(1, 0, 2, 3)
    if padding or a.dtype != dtype:
        padded = np.zeros((b, ci, h + 2 * padding, wd + 2 * padding), dtype)
        padded[:, :, padding:padding + h, padding:padding + wd] = a
        a = padded
    win = np.lib.stride_tricks.sliding_window_view(a, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    ho, wo = win.shape[2:4]
    cols = np.empty((ci, k, k, b, ho, wo), dtype)                               # [Ci*k*k, B*Ho*Wo]
    np.copyto(cols, win.transpose(1, 4, 5, 0, 2, 3))
    y = w @ cols.reshape(ci * k * k, -1)
    return y.reshape(co, b, ho, wo).transpose(1, 0, 2, 3)


def conv2d_general(a: np.ndarray, w: np.ndarray, stride, padding, dilation, groups: int,
                   dtype=np.float64) -> np.ndarray:
    """Cross-correlation (as torch ``conv2d``) of ``a [B, Ci, H, W]`` with
    ``w [Co, Ci/groups, kh, kw]``; ``stride``, ``padding``, ``dilation``: (H, W)
    pairs. ``[B, Co, Ho, Wo]``, exact for integers as :func:`conv2d`."""
    b, ci, h, wd = a.shape
    co, cig, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    x = np.zeros((b, ci, h + 2 * ph, wd + 2 * pw), dtype)
    x[:, :, ph:ph + h, pw:pw + wd] = a
    win = np.lib.stride_tricks.sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1),
                                                   axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    ho, wo = win.shape[2:4]
    cog = co // groups
    out = np.empty((b, co, ho, wo), dtype)
    for g in range(groups):
        cols = win[:, g * cig:(g + 1) * cig].transpose(1, 4, 5, 0, 2, 3).reshape(cig * kh * kw, -1)
        wg = w[g * cog:(g + 1) * cog].reshape(cog, -1).astype(dtype, copy=False)
        out[:, g * cog:(g + 1) * cog] = (wg @ cols).reshape(cog, b, ho, wo).transpose(1, 0, 2, 3)
    return out


def conv_fanout(h: int, w: int, k: int, stride: int, padding: int, cout: int) -> np.ndarray:
    """Synaptic fan-out ``[H, W]`` of each input position: output neurons it reaches."""
    ho = (h + 2 * padding - k) // stride + 1
    wo = (w + 2 * padding - k) // stride + 1
    # transpose convolution of an all-ones output map
    fan = np.zeros((h + 2 * padding, w + 2 * padding))
    for i in range(ho):
        for j in range(wo):
            fan[i * stride:i * stride + k, j * stride:j * stride + k] += 1
    fan = fan[padding:padding + h, padding:padding + w]
    return fan * cout


@functools.lru_cache(maxsize=64)
def fingerprint_weights(n: int) -> np.ndarray:
    """Fixed pseudo-random positive weights (Knuth hash) for spike checksums
    (cached: every Lava step of every layer uses them; do not modify)."""
    w = (np.arange(1, n + 1, dtype=np.int64) * 2654435761) % (1 << 20) + 1
    w.flags.writeable = False
    return w


def fingerprint_rows(spikes: np.ndarray) -> np.ndarray:
    """``[B, 2]`` int64: ``(count, checksum)`` of each sample of ``spikes [B, ...]``
    (0/1; a float64 matrix product, exact while ``size * 2**20 < 2**53``)."""
    flat = np.asarray(spikes, dtype=float).reshape(spikes.shape[0], -1)
    w = fingerprint_weights(flat.shape[1]).astype(float)
    return np.stack([flat.sum(1), flat @ w], axis=1).astype(np.int64)


def fingerprint(spikes: np.ndarray) -> tuple:
    """``(count, checksum)`` of a spike array (C-major flattening)."""
    flat = np.asarray(spikes).reshape(-1).astype(np.int64)
    return int(flat.sum()), int(flat @ fingerprint_weights(flat.size))
