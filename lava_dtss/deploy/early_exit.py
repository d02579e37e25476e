"""Per-sample early exit on top of DTSS: exit policies on the readout's
accumulated logits, average steps with exits, threshold choice on validation.

Layouts (time is the last axis):

* ``z [S, K, T]`` (int64): the readout's accumulated integer logit sums after
  window step ``t`` (0-based), ``z[:, :, t] = sum_{t' <= t} (T_max * W x_t' + b)``
  with ``W``, ``b`` the file's readout integers and ``x_t'`` the readout's input
  summed over tokens at step ``t'`` (``reference.readout_steps``; the Lava
  readout computes the same). At the full window ``z[:, :, T_max - 1]`` is
  ``T_max`` times the file's logits, so its argmax is the full-window
  prediction; ``z[:, :, t] / ((t + 1) * T_max)`` is the mean-per-step logit in
  the file's units.
* ``steps [S]`` (int64): window steps a sample runs, ``1..T_max``; a sample that
  exits after step ``t`` runs ``t + 1`` steps, and every layer stops then: layer
  ``l`` with DTSS active steps ``a_l`` runs ``min(a_l, steps)`` steps (its
  operations after the exit are 0).

Policies (the decision after step ``t``; the last step always ends the sample):

* ``never``: run all ``T_max`` steps (threshold ``None``).
* ``margin``: ``top1(z_t) - top2(z_t) >= threshold``, integers only (what a
  chip's readout computes); threshold an integer ``>= 0`` in units of ``z``.
* ``confidence``: ``max softmax(z_t / ((t + 1) T_max tau)) >= threshold``, the
  top-class probability of the mean-per-step logits at temperature ``tau``
  (file logit units; :func:`calibrate_temperature` fits it on validation);
  threshold in ``(0, 1]``. Needs ``exp``: training side only (the Lava readout
  refuses it).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

POLICIES = ('never', 'margin', 'confidence')


def check_policy(policy: str, threshold):
    """The threshold of ``policy`` checked and typed (int for margin, float for
    confidence, None for never); ``ValueError`` (one line) otherwise."""
    if policy not in POLICIES:
        raise ValueError(f'unknown exit policy {policy!r}; expected one of {", ".join(POLICIES)}')
    if policy == 'never':
        if threshold is not None:
            raise ValueError('exit policy never takes no threshold')
        return None
    if threshold is None or isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise ValueError(f'exit policy {policy} needs a numeric threshold, got {threshold!r}')
    if not math.isfinite(threshold):   # int(inf) raised OverflowError, int(nan) ValueError (issue 26)
        raise ValueError(f'exit policy {policy} needs a finite threshold, got {threshold}; never exiting '
                         'early is --exit-policy never')
    if policy == 'margin':
        if threshold != int(threshold) or threshold < 0:
            raise ValueError(f'margin threshold must be an integer >= 0 (units of the accumulated '
                             f'integer logit sums), got {threshold}')
        return int(threshold)
    if not 0 < threshold <= 1:
        raise ValueError(f'confidence threshold must be in (0, 1] (a softmax probability), got {threshold}')
    return float(threshold)


def check_readout(spec, source: str = 'the network'):
    """``ValueError`` unless ``spec`` ends in a ``readout`` layer (early exit
    needs its accumulated logits; a stock NetX file has none)."""
    if not spec.layers or spec.layers[-1].type != 'readout':
        raise ValueError(f'{source} has no readout layer (a stock NetX file): early exit needs the '
                         "readout's accumulated logits; run it without an exit policy")


def margins(z: np.ndarray) -> np.ndarray:
    """``[S, T]`` int64: largest minus second largest of ``z [S, K, T]`` per step."""
    top2 = np.partition(np.asarray(z, dtype=np.int64), -2, axis=1)[:, -2:, :]
    return top2[:, 1, :] - top2[:, 0, :]


def confidences(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``[S, T]``: top-class softmax probability of ``z[:, :, t] / ((t + 1) T tau)``."""
    if not temperature > 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    t_max = z.shape[-1]
    x = np.asarray(z, dtype=np.float64) / (np.arange(1, t_max + 1) * t_max * float(temperature))
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return 1.0 / e.sum(axis=1)          # exp(0) / sum: the top class's probability


def statistic(z: np.ndarray, policy: str, temperature: float = 1.0) -> np.ndarray:
    """``[S, T]`` per-step statistic that ``policy``'s threshold is compared with."""
    if policy == 'margin':
        return margins(z)
    if policy == 'confidence':
        return confidences(z, temperature)
    raise ValueError(f'exit policy {policy!r} has no statistic; expected margin or confidence')


def steps_from_statistic(stat: np.ndarray, threshold) -> np.ndarray:
    """``[S]`` steps run: 1 + the first ``t`` with ``stat[:, t] >= threshold``,
    ``T`` where none (the last step always ends the sample)."""
    hit = stat[:, :-1] >= threshold
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, stat.shape[1]).astype(np.int64)


def exit_steps(z: np.ndarray, policy: str, threshold=None, temperature: float = 1.0) -> np.ndarray:
    """``[S]`` window steps each sample runs under ``policy`` (module docstring)."""
    threshold = check_policy(policy, threshold)
    if policy == 'never':
        return np.full(z.shape[0], z.shape[-1], dtype=np.int64)
    return steps_from_statistic(statistic(z, policy, temperature), threshold)


def exit_logits(z: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """``[S, K]``: ``z`` at each sample's last step (its prediction is the argmax)."""
    return z[np.arange(z.shape[0]), :, np.asarray(steps) - 1]


def truncate_fingerprints(fps: dict, steps: np.ndarray, t_max: int) -> dict:
    """Fingerprints ``{layer: [S*T, 2]}`` with the rows of steps a sample did not
    run (``t >= steps[s]``) zeroed: what a run with these exits records."""
    keep = (np.arange(t_max)[None, :] < np.asarray(steps)[:, None]).reshape(-1, 1)
    return {n: fp * keep for n, fp in fps.items()}


def average_steps(steps: np.ndarray, active_steps: dict, weights: dict = None) -> dict:
    """Average steps with exits ``steps [S]``: ``exit`` (window steps, mean over
    samples), ``plain`` (mean over layers and samples of ``min(a_l, steps)``) and,
    with ``weights`` (synaptic operations per step of each layer), ``weighted``."""
    steps = np.asarray(steps, dtype=np.float64)
    names = list(active_steps)
    per_layer = {n: np.minimum(active_steps[n], steps).mean() for n in names}
    out = {'exit': float(steps.mean()), 'plain': float(np.mean(list(per_layer.values())))}
    if weights:
        total = sum(weights[n] for n in names)
        out['weighted'] = float(sum(weights[n] * per_layer[n] for n in names) / total)
    return out


def calibrate_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature ``tau`` (file logit units) minimising the negative
    log-likelihood of ``softmax(logits / tau)`` on (validation) ``labels``:
    a grid over 10**(-3..6), then a finer one around the best."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)

    def nll(tau):
        a = x / tau
        a = a - a.max(axis=1, keepdims=True)
        return float((np.log(np.exp(a).sum(axis=1)) - a[np.arange(len(y)), y]).mean())
    grid = 10.0 ** np.linspace(-3, 6, 91)
    best = grid[int(np.argmin([nll(t) for t in grid]))]
    fine = best * 10.0 ** np.linspace(-0.1, 0.1, 41)
    return float(fine[int(np.argmin([nll(t) for t in fine]))])


def candidate_thresholds(stat: np.ndarray, policy: str, limit: int = 400) -> np.ndarray:
    """Thresholds worth trying: the statistic's distinct values before the last
    step (at most ``limit``, by quantile), plus one above them all (never exit
    early)."""
    v = np.unique(stat[:, :-1])
    if v.size > limit:
        v = np.unique(np.quantile(v, np.linspace(0, 1, limit), method='nearest'))
    if policy == 'margin':
        v = np.unique(np.append(v[v >= 0], v.max() + 1 if v.size else 0)).astype(np.int64)
    else:
        v = v[(v > 0) & (v <= 1)]
        v = np.append(v, 1.0) if not v.size or v.max() < 1 else v
    return v


def sweep(z: np.ndarray, labels: np.ndarray, policy: str, thresholds, active_steps: dict,
          weights: dict = None, temperature: float = 1.0) -> list:
    """One row per threshold: ``threshold``, ``accuracy``, ``steps`` (as
    :func:`average_steps`)."""
    stat = statistic(z, policy, temperature)
    rows = []
    for thr in thresholds:
        thr = check_policy(policy, thr.item() if hasattr(thr, 'item') else thr)
        steps = steps_from_statistic(stat, thr)
        acc = float((exit_logits(z, steps).argmax(1) == labels).mean())
        rows.append({'threshold': thr, 'accuracy': acc,
                     'steps': average_steps(steps, active_steps, weights)})
    return rows


def choose_threshold(rows: list, full_accuracy: float, budget_pp: float = 0.5) -> dict:
    """The row of fewest average exit steps whose accuracy is at least
    ``full_accuracy - budget_pp / 100`` (the largest threshold on ties), from
    :func:`sweep` on validation; ``None`` if none qualifies."""
    ok = [r for r in rows if r['accuracy'] >= full_accuracy - budget_pp / 100 - 1e-12]
    if not ok:
        return None
    return min(ok, key=lambda r: (r['steps']['exit'], -r['threshold']))


def exit_operations(spec, images, steps, gating: bool = True, batch_size: int = 256):
    """``(synops, neuron_updates)`` per layer (totals over the samples) of the
    deployed model when sample ``s`` runs ``steps[s]`` window steps: what a Lava
    run with these exits executes."""
    import torch

    from ..analysis.operations import OperationCounter
    from .export import deployed_model
    model = deployed_model(spec)
    steps = torch.as_tensor(np.asarray(steps, dtype=np.int64))
    with torch.no_grad(), OperationCounter(model, gating=gating) as counter:
        for start in range(0, images.shape[0], batch_size):
            counter.sample_steps = steps[start:start + batch_size]
            model(images[start:start + batch_size])
    return counter.synops, counter.neuron_updates


def lava_steps(steps, batch: int) -> int:
    """Lava steps of a continuous-batching run (``lava_processes.exit_process``)
    whose samples run ``steps [S]`` window steps on ``batch`` rows: samples in
    order, each taking the row that frees first (the lowest row on ties), plus
    the flush step."""
    import heapq
    rows = [(0, r) for r in range(min(int(batch), len(steps)))]
    end = 0
    for n in np.asarray(steps, dtype=np.int64):
        free, r = heapq.heappop(rows)
        end = max(end, free + int(n))
        heapq.heappush(rows, (free + int(n), r))
    return end + 1
