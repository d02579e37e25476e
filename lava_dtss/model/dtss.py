"""Dynamic Time Step Spiking (DTSS) gate and mask loss.

Formulation (docs/dtss.md, from the design notes): a gate owns a trainable
score vector ``s`` of length ``T_max``. ``p = softmax(s)`` is a distribution
over the layer's last active step ``k`` (1..T_max). The forward pass uses the
hard prefix mask ``m_t = [t <= argmax(p) + 1]``; the backward pass the soft
mask ``m~ = M p`` with ``M[t, k] = 1 for k >= t`` (straight-through). Spikes
``[N, ..., T]`` are multiplied by the mask along the last (time) axis.
"""
from __future__ import annotations

import torch

CATEGORIES = ('sps', 'qkv', 'attn', 'mlp')
DEFAULT_LOSS_CATEGORIES = ('qkv', 'attn', 'mlp')


def soft_prefix_mask(scores: torch.Tensor) -> torch.Tensor:
    """``M softmax(scores)``: ``m~[t] = sum_{k >= t} p[k]`` (0-based), shape ``[T]``."""
    p = torch.softmax(scores, dim=-1)
    return torch.flip(torch.cumsum(torch.flip(p, (-1,)), -1), (-1,))


def hard_prefix_mask(scores: torch.Tensor) -> torch.Tensor:
    """Binary prefix mask of length ``T``: ones up to and including argmax."""
    last = int(torch.argmax(scores))
    steps = torch.arange(scores.shape[-1], device=scores.device)
    return (steps <= last).to(scores.dtype)


def chosen_steps(scores: torch.Tensor, frozen_steps: int = 0) -> int:
    """Active steps a gate's ``scores`` select, ``argmax + 1`` (1..T_max), unless
    ``frozen_steps`` (> 0, set by a deployed model) fixes them."""
    return int(frozen_steps) if int(frozen_steps) > 0 else int(torch.argmax(scores.detach())) + 1


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
        self.scores = torch.nn.Parameter(torch.zeros(self.t_max), requires_grad=self.enabled)
        self.reset_scores(max(1, self.t_max // 2) if init_steps is None else int(init_steps))
        # set by export/import of deployed models: the hard choice, frozen
        self.register_buffer('frozen_steps', torch.tensor(0, dtype=torch.int64))

    @torch.no_grad()
    def reset_scores(self, steps: int):
        """Scores that select ``steps`` active steps: 1 at step ``steps``, 0 elsewhere."""
        if not 1 <= int(steps) <= self.t_max:
            raise ValueError(f'initial steps must be in 1..{self.t_max}, got {steps}')
        self.scores.zero_()
        self.scores[int(steps) - 1] = 1.0

    @property
    def active_steps(self) -> int:
        """Number of time steps ``T_l`` this layer is active (1..T_max)."""
        if not self.enabled and int(self.frozen_steps) == 0:
            return self.t_max
        return chosen_steps(self.scores, self.frozen_steps)

    def soft_mask(self) -> torch.Tensor:
        """``m~`` (differentiable), shape ``[T_max]``."""
        return soft_prefix_mask(self.scores)

    def mask(self) -> torch.Tensor:
        """Hard prefix mask with straight-through gradient, shape ``[T_max]``."""
        if int(self.frozen_steps) > 0 or not self.enabled:
            m = torch.zeros(self.t_max, device=self.scores.device)
            m[:self.active_steps] = 1
            return m
        soft = self.soft_mask()
        hard = hard_prefix_mask(self.scores.detach())
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
