"""Training-side fixed-point inference of an exported file, in the layout the
Lava runtime reports: logits and per-layer spike fingerprints, the readout's
per-step logit sums, and the same with per-sample early exit (``exit_reference``)."""
from __future__ import annotations

import numpy as np
import torch

from ..fixed_point import FLOAT32_EXACT, fingerprint_weights
from ..loihi2 import ACT_SHIFT, max_abs_input, state_bounds
from . import early_exit
from .export import deployed_model
from .netx_file import NetSpec


def float32_is_exact(spec: NetSpec) -> bool:
    """Whether float32 holds every synaptic sum and neuron state of ``spec``
    exactly: each is a multiple of 1/64 (SLAYER units; 1/4096 in the neuron)
    whose numerator is bounded from the file's integers, layer by layer:
    ``|x| <= max_o sum_i |w[o, i]| * max input`` (inputs: the summed outputs of
    the layers feeding it, 1 per spike, ``inputScale`` per input pixel),
    ``|u| <= 64 |x| / (1 - a_u)``, ``|v| <= (|u| + 64 |bias|) / (1 - a_v)`` with
    ``a = (4096 - decay) / 4096`` (``lava_dtss.loihi2.max_abs_input`` and
    ``state_bounds``). Every bound must stay below 2**24, and so must each
    layer's spike level ``(vThMant << 6) + 1`` (``loihi2.spike_level``), the
    integer the state is compared with."""
    peak = {}   # layer index -> largest output magnitude
    for i, layer in enumerate(spec.layers):
        if layer.type == 'input':
            peak[i] = float(layer.params.get('inputScale', 1))
            continue
        if layer.type not in ('conv', 'attention'):
            continue
        fan_in = sum(peak.get(j, float('inf')) for j in layer.inputs)
        if layer.type == 'conv':
            x = max_abs_input(layer.params['weight'], fan_in)
            bias = float(np.abs(np.asarray(layer.params.get('bias', 0), dtype=np.float64)).max())
        else:   # q (k^T v): at most tokens x head width counts, each weighing `weight`
            c, h, w_ = layer.shape
            x = abs(float(layer.params['weight'])) * (c // int(layer.params['heads'])) * h * w_
            bias = 0.0
        bounds = state_bounds(x, bias, layer.neuron['iDecay'], layer.neuron['vDecay'])
        if bounds is None or not np.isfinite(x):
            return False
        level = (int(layer.neuron['vThMant']) << ACT_SHIFT) + 1
        if max(x, *bounds, level) >= FLOAT32_EXACT:
            return False
        peak[i] = 1.0
    return True


def _fingerprints(spikes: dict) -> dict:
    """``{layer: [B*T, 2]}`` (count, checksum; sample-major) of spikes ``[B, C, H, W, T]``."""
    fps = {}
    for n, s in spikes.items():
        s = s.double().reshape(s.shape[0], -1, s.shape[-1])   # [B, C*H*W, T], no copy
        w = torch.from_numpy(fingerprint_weights(s.shape[1]).astype(np.float64))
        # float64 sums of 0/1 spikes times weights < 2**21: exact integers
        fp = torch.stack([s.sum(1), torch.matmul(w, s)], dim=-1)   # [B, T, 2]
        fps[n] = fp.reshape(-1, 2).to(torch.int64)                  # [B*T, 2], sample-major
    return fps


@torch.no_grad()
def reference_run(spec: NetSpec, images: torch.Tensor, batch_size: int = 256):
    """``(logits [S, K], fingerprints {layer: [S*T, 2]})`` of the deployed model
    on ``images [S, C, H, W]`` in [0, 1]. Spikes are reduced to fingerprints
    batch by batch, so memory does not grow with ``S``. The layers run in
    float32 where ``float32_is_exact`` proves it exact (about 3x faster than
    float64), the readout always in float64."""
    model = deployed_model(spec, torch.float32 if float32_is_exact(spec) else torch.float64)
    fps = {n: [] for n, _ in model.gated_layers()}
    logits = []
    for start in range(0, images.shape[0], batch_size):
        out, spikes = model.forward_with_spikes(images[start:start + batch_size])
        logits.append(out)
        for n, fp in _fingerprints(spikes).items():
            fps[n].append(fp)
    return torch.cat(logits).numpy(), {n: torch.cat(c).numpy() for n, c in fps.items()}


@torch.no_grad()
def readout_steps(spec: NetSpec, images: torch.Tensor, batch_size: int = 256, model=None,
                  fingerprints: bool = True):
    """``(z [S, K, T] int64, fingerprints {layer: [S*T, 2]})``: the readout's
    accumulated integer logit sums after every window step,
    ``z[:, :, t] = sum_{t' <= t} (T * W x_t' + b)`` (``x_t'``: the readout's input
    summed over tokens at step ``t'``; ``z[:, :, T-1] = T *`` the logits of
    :func:`reference_run`), and every layer's fingerprints over the full window
    (``early_exit`` zeroes the steps after an exit). ``model``: a
    ``deployed_model`` of ``spec`` to reuse; ``fingerprints=False``: ``{}``
    (faster). ``ValueError`` without a readout."""
    early_exit.check_readout(spec)
    model = model or deployed_model(spec, torch.float32 if float32_is_exact(spec) else torch.float64)
    w, b = model.head.weight.double(), model.head.bias.double()
    fps = {n: [] for n, _ in model.gated_layers()}
    zs = []
    for start in range(0, images.shape[0], batch_size):
        spikes = {}
        hooks = [m.register_forward_hook(lambda mod, i, o, n=n: spikes.__setitem__(n, o))
                 for n, m in model.gated_layers()] if fingerprints else []
        try:
            x = model.features(images[start:start + batch_size])     # [B, C, H, W, T]
        finally:
            for h in hooks:
                h.remove()
        t_max = x.shape[-1]
        acc = x.double().sum(dim=(2, 3)).cumsum(dim=-1)                # [B, C, T], exact integers
        steps = torch.arange(1, t_max + 1, dtype=torch.float64)
        z = t_max * torch.einsum('kc,bct->bkt', w, acc) + b[None, :, None] * steps
        zs.append(z.round().to(torch.int64))
        for n, fp in _fingerprints(spikes).items():
            fps[n].append(fp)
    return torch.cat(zs).numpy(), {n: torch.cat(c).numpy() for n, c in fps.items() if c}


def direct_images(images: torch.Tensor, input_scale: float) -> np.ndarray:
    """Integer input frames ``[S, C, H, W]`` (direct encoding: the Lava input
    process shows each for all ``T_max`` steps)."""
    x = torch.round(images.double() * input_scale)      # the schema's round(inputScale * x)
    return x.numpy().copy()


def direct_frames(images: torch.Tensor, t_max: int, input_scale: float) -> np.ndarray:
    """Integer input frames ``[S, C, H, W, T]`` for the Lava input process."""
    x = torch.from_numpy(direct_images(images, input_scale))
    return x.unsqueeze(-1).expand(*x.shape, t_max).numpy().copy()


def exit_reference(spec, images, policy: str, threshold=None, temperature: float = 1.0,
                   batch_size: int = 256) -> dict:
    """Training-side fixed-point inference with early exit, in the layout the
    Lava runtime reports: ``z`` (``[S, K, T]``), ``steps`` (``[S]``), ``logits``
    (``[S, K]``: ``z`` at the exit step) and ``fingerprints`` (``{layer: [S*T, 2]}``,
    zero after the exit)."""
    threshold = early_exit.check_policy(policy, threshold)
    z, fps = readout_steps(spec, images, batch_size)
    steps = early_exit.exit_steps(z, policy, threshold, temperature)
    return {'z': z, 'steps': steps, 'logits': early_exit.exit_logits(z, steps),
            'fingerprints': early_exit.truncate_fingerprints(fps, steps, z.shape[-1])}
