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


def _decay(x: np.ndarray, decay: int) -> np.ndarray:
    """``sign(x) * ((|x| * (4096 - decay)) >> 12)`` (round toward zero)."""
    y = x * (4096 - int(decay))
    return np.sign(y) * (np.abs(y) >> DECAY_SHIFT)


def lif_step(u, v, a_in, bias, du: int, dv: int, vth: int):
    """One step of Lava's ``PyLifModelBitAcc`` (bias exponent 6, as NetX sets it).

    ``u, v``: int64 state (updated in place); ``a_in``: synaptic input
    (integers); ``bias``: bias mantissa; returns the boolean spikes.
    """
    u[...] = _decay(u, du) + (np.asarray(a_in, dtype=np.int64) << ACT_SHIFT)
    u[...] = np.where(u > MAX_UV, u - 2 * MAX_UV, u)
    u[...] = np.where(u <= -MAX_UV, u + 2 * MAX_UV, u)
    v[...] = np.clip(_decay(v, dv) + u + (np.asarray(bias, dtype=np.int64) << ACT_SHIFT),
                     -MAX_UV + 1, MAX_UV - 1)
    s = v > (int(vth) << ACT_SHIFT)
    v[s] = 0
    return s


def conv2d(a: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Cross-correlation (as torch) of ``a [Ci, H, W]`` with ``w [Co, Ci, k, k]``."""
    co, ci, k, _ = w.shape
    if k == 1 and stride == 1 and padding == 0:
        return (w.reshape(co, ci) @ a.reshape(ci, -1)).reshape(co, *a.shape[1:])
    if padding:
        a = np.pad(a, ((0, 0), (padding, padding), (padding, padding)))
    win = np.lib.stride_tricks.sliding_window_view(a, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    ho, wo = win.shape[1:3]
    cols = win.transpose(0, 3, 4, 1, 2).reshape(ci * k * k, ho * wo)
    return (w.reshape(co, -1) @ cols).reshape(co, ho, wo)


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


def fingerprint(spikes: np.ndarray) -> tuple:
    """``(count, checksum)`` of a spike array (C-major flattening)."""
    flat = np.asarray(spikes).reshape(-1).astype(np.int64)
    return int(flat.sum()), int(flat @ fingerprint_weights(flat.size))
