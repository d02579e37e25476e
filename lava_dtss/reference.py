"""Training-side fixed-point inference of an exported file, in the layout the
Lava runtime reports: logits and per-layer spike fingerprints."""
from __future__ import annotations

import numpy as np
import torch

from .export import deployed_model
from .fixed_point import fingerprint_weights
from .netx_file import NetSpec


@torch.no_grad()
def reference_run(spec: NetSpec, images: torch.Tensor, batch_size: int = 256):
    """``(logits [S, K], fingerprints {layer: [S*T, 2]})`` of the deployed model
    on ``images [S, C, H, W]`` in [0, 1]. Spikes are reduced to fingerprints
    batch by batch, so memory does not grow with ``S``."""
    model = deployed_model(spec)
    fps = {n: [] for n, _ in model.gated_layers()}
    logits = []
    for start in range(0, images.shape[0], batch_size):
        out, spikes = model.forward_with_spikes(images[start:start + batch_size].double())
        logits.append(out)
        for n, s in spikes.items():
            s = s.double().reshape(s.shape[0], -1, s.shape[-1])   # [B, C*H*W, T], no copy
            w = torch.from_numpy(fingerprint_weights(s.shape[1]).astype(np.float64))
            # float64 sums of 0/1 spikes times weights < 2**21: exact integers
            fp = torch.stack([s.sum(1), torch.matmul(w, s)], dim=-1)   # [B, T, 2]
            fps[n].append(fp.reshape(-1, 2).to(torch.int64))          # [B*T, 2], sample-major
    return torch.cat(logits).numpy(), {n: torch.cat(c).numpy() for n, c in fps.items()}


def direct_images(images: torch.Tensor, input_scale: float) -> np.ndarray:
    """Integer input frames ``[S, C, H, W]`` (direct encoding: the Lava input
    process shows each for all ``T_max`` steps)."""
    x = torch.round(images.double() * input_scale)      # the schema's round(inputScale * x)
    return x.numpy().copy()


def direct_frames(images: torch.Tensor, t_max: int, input_scale: float) -> np.ndarray:
    """Integer input frames ``[S, C, H, W, T]`` for the Lava input process."""
    x = torch.from_numpy(direct_images(images, input_scale))
    return x.unsqueeze(-1).expand(*x.shape, t_max).numpy().copy()
