"""Fused CUBA-LIF neuron: the same fixed-point dynamics as lava-dl SLAYER's
``slayer.neuron.cuba.Neuron`` (and so as Lava's ``LIF`` fixed-point model and
Loihi 2), computed in one pass with a hand-written backward.

Tensor layout: ``[N, C, H, W, T]`` (time is the last axis, as in SLAYER).

Units: the input ``x`` is a synaptic current in SLAYER units (hardware units /
``scale``, ``scale = 64``). Internally the state is an integer at
``s_scale = scale * 64 = 4096`` per unit, exactly as SLAYER and Lava's
``PyLifModelBitAcc`` (which shifts the synaptic input and the threshold left by
6 bits) hold it:

    x_int[t] = trunc(4096 * x[t])
    u[t] = rshift0(u[t-1] * (4096 - du), 12) + x_int[t]
    v[t] = rshift0(v[t-1] * (4096 - dv), 12) + u[t] + bias_int
    s[t] = v[t] >= level             (level = ceil(4096 theta + 0.01), an exact integer:
                                      SLAYER's v >= theta + 0.01 / 4096, Loihi's v > vth << 6)
    v[t] = 0 where s[t]               (hard reset)

``rshift0`` is a right shift that rounds toward zero. This is
``lava_dtss.loihi2.lif_step`` (the one definition, with every constant)
without its 24-bit wrap and clip: the same integers while the state stays in
24 bits (``tests/test_neuron.py`` ties both paths to it). The backward pass is
SLAYER's: the spike's surrogate derivative
``scale_rho/2/tau_rho * exp(-|v - theta|/tau_rho)`` followed by the transposed
leaky integrators for voltage and current (the reset is not differentiated).
"""
from __future__ import annotations

import torch
from lava.lib.dl.slayer.neuron import cuba

from ..loihi2 import DECAY_UNITY, STATE_SCALE, THRESHOLD_EPS, decay_factor, spike_level
from . import cuba_kernel


def _state_dtype(du: int, dv: int) -> torch.dtype:
    """float32 holds the integer state exactly (|state| < 2**24, SLAYER's own
    limit) when each decay factor is 0 or a power of two; otherwise float64."""
    def exact(d):
        k = DECAY_UNITY - int(d)
        return k == 0 or (k & (k - 1)) == 0
    return torch.float32 if exact(du) and exact(dv) else torch.float64


def _state_dtype_for(x: torch.Tensor, du: int, dv: int) -> torch.dtype:
    """The integer state's dtype for input ``x``: float64 for a float64 input,
    else ``_state_dtype``."""
    return torch.float64 if x.dtype == torch.float64 else _state_dtype(du, dv)


def _surrogate(volt: torch.Tensor, thr: float, tau_rho: float, scale_rho: float) -> torch.Tensor:
    """SLAYER's spike derivative ``scale_rho / 2 / tau_rho * exp(-|v - thr| / tau_rho)``
    of the voltage ``volt`` (1/4096 units; ``thr`` in SLAYER units), a new tensor."""
    dist = torch.sub(volt, thr * STATE_SCALE).abs_()
    return dist.mul_(-1 / (tau_rho * STATE_SCALE)).exp_().mul_(scale_rho / 2 / tau_rho)


def cuba_forward(x, du: int, dv: int, threshold: float, bias=None, use_compiled: bool = True):
    """Integer CUBA dynamics without autograd.

    Parameters
    ----------
    x : float tensor ``[N, ..., T]``, synaptic current in SLAYER units.
    du, dv : int, current and voltage decay in 1/4096 (Loihi ``iDecay``, ``vDecay``).
    threshold : float, SLAYER threshold (hardware ``vThMant / 64``).
    bias : optional float tensor broadcastable to ``x[..., 0]``, added to the
        voltage each step (Loihi bias), SLAYER units.

    use_compiled : the compiled loop of ``cuba_kernel`` where it applies (same
        integers); False forces the PyTorch path.

    Returns ``(spikes, voltage)``, both ``[N, ..., T]``: spikes (x's dtype) and
    the voltage before reset in integer state units (SLAYER units * 4096); views
    of ``[N, T, ...]`` memory (compiled) or ``[T, N, ...]`` memory (PyTorch).
    The integer state is held in floating point and truncated toward zero
    after each decay (``sign(y) * (|y| >> 12)`` in integer terms).
    """
    x = x.detach()  # no autograd here (_CubaFunction supplies the backward)
    dtype = _state_dtype_for(x, du, dv)
    if use_compiled:
        compiled = _compiled_forward(x, du, dv, threshold, bias, dtype)
        if compiled is not None:
            return compiled
    steps = x.shape[-1]
    # x_int[t] = trunc(4096 x[..., t]), time-major and contiguous (one strided pass)
    x_tm = torch.empty((steps,) + tuple(x.shape[:-1]), dtype=x.dtype, device=x.device)
    torch.mul(x.movedim(-1, 0), STATE_SCALE, out=x_tm)
    x_int = x_tm.trunc_().to(dtype)
    thr = spike_level(threshold)   # SLAYER's v_int >= (theta + 0.01 / 4096) * 4096 as an exact integer
    a_u, a_v = decay_factor(du), decay_factor(dv)
    bias_int = None if bias is None else torch.trunc(STATE_SCALE * bias).to(dtype)
    volt = torch.empty_like(x_int)
    fired = torch.empty(x_int.shape, dtype=torch.bool, device=x.device)
    u = torch.zeros_like(x_int[0])
    v = torch.zeros_like(x_int[0])
    zero = torch.zeros((), dtype=dtype, device=x.device)
    for t in range(steps):
        u = torch.mul(u, a_u).trunc_().add_(x_int[t]) if a_u else x_int[t]
        vt = volt[t]
        if a_v:
            torch.mul(v, a_v, out=vt).trunc_().add_(u)
        else:
            vt.copy_(u)
        if bias_int is not None:
            vt.add_(bias_int)
        torch.ge(vt, thr, out=fired[t])
        v = torch.where(fired[t], zero, vt)
    spikes = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    spikes.copy_(fired.movedim(0, -1))
    return spikes, volt.movedim(0, -1)


def _compiled_forward(x, du, dv, threshold, bias, dtype):
    """``cuba_forward`` by the compiled loop (``cuba_kernel``): spikes and voltage
    as ``[N, ..., T]`` views of ``[N, T, ...]`` memory (the layout the next
    convolution folds for free); None where it does not apply (CUDA, disabled,
    no compiler, a bias that differs between samples)."""
    if x.device.type != 'cpu' or x.dtype not in (torch.float32, torch.float64) or x.dim() < 2:
        return None
    kernel = cuba_kernel.get()
    if kernel is None:
        return None
    n, steps, mid = x.shape[0], x.shape[-1], tuple(x.shape[1:-1])
    bias_vec = torch.empty(0, dtype=dtype)
    if bias is not None:
        b = torch.broadcast_to(torch.trunc(STATE_SCALE * bias).to(dtype), x.shape[:-1])
        if n > 1 and b.stride(0) != 0:
            return None
        bias_vec = b[0].reshape(-1).contiguous()
    x_ntm = x.movedim(-1, 1).reshape(n, steps, -1).contiguous()   # free when x is a folded convolution's output
    spikes, volt = kernel.cuba_forward(x_ntm, bias_vec, dtype == torch.float64,
                                       decay_factor(du), decay_factor(dv), spike_level(threshold))
    return (spikes.view(n, steps, *mid).movedim(1, -1), volt.view(n, steps, *mid).movedim(1, -1))


def _compiled_backward(grad_spikes, voltage, params):
    """The backward of ``_CubaFunction`` by the compiled loop; ``voltage`` is the
    ``[N, ..., T]`` view of ``[N, T, ...]`` memory that ``_compiled_forward`` made."""
    du, dv, thr, tau_rho, scale_rho = params
    kernel = cuba_kernel.get()
    n, steps, mid = voltage.shape[0], voltage.shape[-1], tuple(voltage.shape[1:-1])
    volt = voltage.movedim(-1, 1).reshape(n, steps, -1)
    grad = grad_spikes.movedim(-1, 1).reshape(n, steps, -1).to(volt.dtype).contiguous()
    out = kernel.cuba_backward(grad, _surrogate(volt, thr, tau_rho, scale_rho), decay_factor(du), decay_factor(dv))
    return out.view(n, steps, *mid).movedim(1, -1).to(grad_spikes.dtype)


class _CubaFunction(torch.autograd.Function):
    """Spikes from current with SLAYER's surrogate-gradient backward."""

    @staticmethod
    def forward(ctx, x, du, dv, threshold, tau_rho, scale_rho):
        x = x.detach()
        out = _compiled_forward(x, du, dv, threshold, None, _state_dtype_for(x, du, dv))
        ctx.compiled = out is not None
        spikes, voltage = out if ctx.compiled else cuba_forward(x, du, dv, threshold, use_compiled=False)
        ctx.save_for_backward(voltage)
        ctx.params = (du, dv, threshold + THRESHOLD_EPS, tau_rho, scale_rho)
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        (voltage,) = ctx.saved_tensors
        if ctx.compiled:
            return (_compiled_backward(grad_spikes, voltage, ctx.params),) + (None,) * 5
        du, dv, thr, tau_rho, scale_rho = ctx.params
        volt_tm = voltage.movedim(-1, 0)   # stored time-major: a contiguous view
        grad = torch.empty_like(volt_tm)
        grad.copy_(grad_spikes.movedim(-1, 0))
        grad.mul_(_surrogate(volt_tm, thr, tau_rho, scale_rho))
        # transposed leaky integrators: voltage, then current
        for a in (decay_factor(dv), decay_factor(du)):
            if a:
                for t in range(grad.shape[0] - 2, -1, -1):
                    grad[t].add_(grad[t + 1], alpha=a)
        return grad.movedim(0, -1), None, None, None, None, None


class FastCubaNeuron(cuba.Neuron):
    """Drop-in replacement of ``slayer.neuron.cuba.Neuron`` (same parameters,
    same ``device_params`` for export, same spikes) with a fused forward and
    backward. Decays are fixed (``requires_grad`` must be False) and the state
    does not persist between calls (``persistent_state`` False)."""

    def __init__(self, **neuron_params):
        if neuron_params.get('requires_grad') or neuron_params.get('persistent_state'):
            raise ValueError('FastCubaNeuron supports requires_grad=False and '
                             'persistent_state=False only')
        super().__init__(**neuron_params)

    def forward(self, x, bias=None):
        """Spikes ``[N, C, ..., T]`` for the current ``x`` (same layout)."""
        if self.shape is None:
            self.shape = x.shape[1:-1]
        du, dv = int(self.cx_current_decay), int(self.cx_voltage_decay)
        if x.dtype in (torch.float16, torch.bfloat16):   # autocast: the integer state in float32, as without it
            x = x.float()
        if bias is not None:  # inference only (exported models)
            return cuba_forward(x, du, dv, self.threshold, bias)[0]
        return _CubaFunction.apply(
            x, du, dv, self.threshold,
            self.tau_rho * cuba.TAU_RHO_MULT, self.scale_rho * cuba.SCALE_RHO_MULT)


class AnalogActivation(torch.nn.Module):
    """The ANN twin's activation in place of a LIF layer: ``clamp(x / threshold, 0, 1)``,
    the firing rate (spikes per step) that an integrate-and-fire neuron with
    constant input current ``x`` approaches. Same layout as the neuron it replaces
    (``[N, C, ..., T]``, here ``T = 1``)."""

    def __init__(self, threshold: float = 1.0, **_unused):
        super().__init__()
        self.threshold = float(threshold)
        self.shape = None

    def forward(self, x, bias=None):
        if bias is not None:
            raise ValueError('the ANN twin has no fixed-point (exported) form')
        return torch.clamp(x / self.threshold, 0.0, 1.0)
