"""Dynamic Time Step Spiking (DTSS) gate and mask loss.

Formulation (docs/dtss.md): a gate owns one trainable real number, its length
``l`` in ``[1, T_max]``: the number of time steps the layer runs. The forward
pass multiplies the layer's spikes ``[N, ..., T]`` along the last (time) axis
by the hard prefix mask ``m_t = [t <= round(l)]`` (t = 1..T_max); the backward
pass uses the soft mask ``m~_t = clamp(l - t + 1, 0, 1)``, the linear
interpolation between the hard masks of ``floor(l)`` and ``ceil(l)``
(straight-through). The mask loss of a gate is ``sum_t m~_t / T_max =
l / T_max``: forward, backward and mask loss act on the same number, and as
it moves continuously the layer's steps change one at a time.

The paper's summary describes a score per step with ``p = softmax(s)`` and the
argmax of ``p`` as the forward choice; there the mask loss acts on ``E_p[k]``
while the forward follows the argmax, and its gates jump from T_max straight to
1 step (measured and derived in docs/dtss.md); an expected-length rule
(``round(E_p[k])``) stalls at vertices of the simplex instead. The length gate
is this project's fix.
"""
from __future__ import annotations

import math

import torch

CATEGORIES = ('sps', 'qkv', 'attn', 'mlp')
DEFAULT_LOSS_CATEGORIES = ('qkv', 'attn', 'mlp')
GATE_PARAMETER = 'gate.length'   # state-dict suffix of a gate's trainable length


def is_gate_parameter(name: str) -> bool:
    """Whether a state-dict key is a DTSS gate's trainable parameter (this
    formulation's ``gate.length`` or the earlier ``gate.scores``)."""
    return name.endswith(GATE_PARAMETER) or name.endswith('gate.scores')


def soft_prefix_mask(length: torch.Tensor, t_max: int) -> torch.Tensor:
    """``m~_t = clamp(length - t + 1, 0, 1)`` for t = 1..t_max, shape ``[t_max]``;
    its sum is ``length`` for ``length`` in ``[0, t_max]``."""
    t = torch.arange(1, t_max + 1, dtype=length.dtype, device=length.device)
    return torch.clamp(length.reshape(()) - t + 1, 0.0, 1.0)


def steps_from_length(length, t_max: int) -> int:
    """Active steps of a length: ``length`` rounded half up, in ``1..t_max``."""
    value = float(length.detach().reshape(())) if isinstance(length, torch.Tensor) else float(length)
    return min(int(t_max), max(1, math.floor(value + 0.5)))


def chosen_steps(length, t_max: int, frozen_steps: int = 0) -> int:
    """Active steps a gate selects (1..t_max): ``frozen_steps`` where a deployed
    model fixed them (> 0), else ``steps_from_length``."""
    return int(frozen_steps) if int(frozen_steps) > 0 else steps_from_length(length, t_max)


def upgrade_gate_state(state: dict, t_max: int = 0) -> dict:
    """A state dict with the earlier formulation's gates (``gate.scores`` of
    length T_max, argmax rule) converted to lengths that select the same steps
    (``t_max`` is not needed: kept for callers that pass it)."""
    out = {}
    for key, value in state.items():
        if key.endswith('gate.scores') and isinstance(value, torch.Tensor) and value.numel() > 0:
            out[key[:-len('scores')] + 'length'] = (torch.argmax(value).reshape(1).to(torch.float32) + 1)
        else:
            out[key] = value
    return out


class DTSSGate(torch.nn.Module):
    """Per-layer time-step gate.

    Parameters
    ----------
    t_max : maximum number of time steps.
    category : one of ``CATEGORIES``; selects the layer for the mask loss.
    enabled : False gives a fixed-T layer (mask of ones, no trainable effect).
    init_steps : initial active steps (default ``T_max // 2``, at least 1).
    """

    def __init__(self, t_max: int, category: str, enabled: bool = True,
                 init_steps: int | None = None):
        super().__init__()
        if category not in CATEGORIES:
            raise ValueError(f'unknown DTSS category {category!r}; expected one of {CATEGORIES}')
        self.t_max = int(t_max)
        self.category = category
        self.enabled = bool(enabled)
        self.length = torch.nn.Parameter(torch.zeros(1), requires_grad=self.enabled)
        self.reset_steps(max(1, self.t_max // 2) if init_steps is None else int(init_steps))
        # set by export/import of deployed models: the hard choice, frozen
        self.register_buffer('frozen_steps', torch.tensor(0, dtype=torch.int64))

    @torch.no_grad()
    def reset_steps(self, steps: int):
        """Set the length to ``steps`` active steps (1..T_max)."""
        if not 1 <= int(steps) <= self.t_max:
            raise ValueError(f'initial steps must be in 1..{self.t_max}, got {steps}')
        self.length.fill_(float(int(steps)))

    @torch.no_grad()
    def project_(self):
        """Clamp the length into ``[1, T_max]`` (call after each optimiser step:
        projected gradient descent)."""
        self.length.clamp_(1.0, float(self.t_max))

    @property
    def active_steps(self) -> int:
        """Number of time steps ``T_l`` this layer is active (1..T_max)."""
        if not self.enabled and int(self.frozen_steps) == 0:
            return self.t_max
        return chosen_steps(self.length, self.t_max, self.frozen_steps)

    def _clamped_length(self) -> torch.Tensor:
        """The length clamped into ``[1, T_max]`` with an identity gradient."""
        c = torch.clamp(self.length, 1.0, float(self.t_max))
        return self.length + (c - self.length).detach()

    def soft_mask(self) -> torch.Tensor:
        """``m~`` (differentiable), shape ``[T_max]``; its sum is the length."""
        return soft_prefix_mask(self._clamped_length(), self.t_max)

    def mask(self) -> torch.Tensor:
        """Hard prefix mask with straight-through gradient, shape ``[T_max]``."""
        steps = torch.arange(self.t_max, device=self.length.device)
        if int(self.frozen_steps) > 0 or not self.enabled:
            return (steps < self.active_steps).to(self.length.dtype)
        soft = self.soft_mask()
        hard = (steps < self.active_steps).to(soft.dtype)
        return soft + (hard - soft).detach()

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        if spikes.shape[-1] != self.t_max:
            raise ValueError(f'expected {self.t_max} time steps on the last axis, '
                             f'got shape {tuple(spikes.shape)}')
        if not self.enabled and int(self.frozen_steps) == 0:
            return spikes   # fixed T: a mask of ones (no pass over the spikes)
        return spikes * self.mask().to(spikes.dtype)

    def extra_repr(self):
        return f't_max={self.t_max}, category={self.category}, enabled={self.enabled}'


def mask_loss(gates, categories=DEFAULT_LOSS_CATEGORIES, weights=None) -> torch.Tensor:
    """``(1/|G|) sum_{l in G} w_{c(l)} sum_t m~_{l,t} / T_max`` over the enabled
    gates whose category is in ``categories`` (0 when there are none).

    ``weights`` maps a category to its relative weight ``w_c`` (default 1 for
    every category); the training script multiplies the loss by ``lambda_m``.
    """
    unknown = set(categories) - set(CATEGORIES)
    if unknown:
        raise ValueError(f'unknown mask-loss categories {sorted(unknown)}; expected {CATEGORIES}')
    weights = weights or {}
    selected = [g for g in gates if g.enabled and g.category in categories]
    if not selected:
        return torch.zeros(())
    terms = [weights.get(g.category, 1.0) * g.soft_mask().sum() / g.t_max for g in selected]
    return torch.stack(terms).mean()
