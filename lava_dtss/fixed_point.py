"""Pure numpy functions for the Lava process models: integer convolution,
fan-out and spike fingerprints (the fixed-point CUBA-LIF step and every Loihi 2
limit: ``lava_dtss.loihi2``).

Arrays are integers carried as float64 (exact below 2**53) or int64.
"""
from __future__ import annotations

import functools

import numpy as np

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
