"""Training helpers: atomic checkpoints that load without unpickling code (and
a checked model from one), RNG state capture, BatchNorm re-estimation,
evaluation with spike statistics, distributed set-up."""
from __future__ import annotations

import json
import os
import random
import tempfile

import numpy as np
import torch

from ..model.dtss import chosen_steps, is_gate_parameter, upgrade_gate_state
from ..model.presets import ViTConfig
from ..model.vit import SpikingViT


class TrainingError(RuntimeError):
    """A training run cannot continue (NaN loss, bad checkpoint, ...)."""


def atomic_write(path: str, write_fn, mode: str = 'wb'):
    """Write ``path`` through a temporary file in the same folder and rename it
    into place, so a reader never sees a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.')
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
        os.replace(tmp, path)
    except OSError as e:     # a full disk: name the file, not nothing (issue 26)
        if os.path.exists(tmp):
            os.unlink(tmp)
        if getattr(e, 'filename', None) in (None, tmp):
            raise OSError(e.errno, e.strerror or str(e), path) from None
        raise
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def unwritable(path: str):
    """Why the file ``path`` cannot be written atomically (a folder, a missing or
    read-only folder, a folder such as /proc that takes no temporary file), or
    None; checked before any long work."""
    if os.path.isdir(path):
        return 'is a folder; expected a file name'
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f'folder {folder} does not exist'
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return 'is not writable'
    try:      # what atomic_write does: a temporary file beside it (fails under /proc)
        with tempfile.NamedTemporaryFile(dir=folder, prefix='.' + os.path.basename(path) + '.'):
            pass
    except OSError as e:
        return f'cannot be written in {folder} ({e.strerror or e})'
    return None


def unusable_folder(path: str):
    """Why files cannot be written atomically into the folder ``path`` (to be
    created if missing), or None."""
    if os.path.exists(path) and not os.path.isdir(path):
        return 'is a file; expected a folder'
    probe = path
    while not os.path.isdir(probe):      # the nearest existing folder must take a new entry
        parent = os.path.dirname(os.path.abspath(probe))
        if parent == os.path.abspath(probe):
            return 'cannot be created'
        probe = parent
    return unwritable(os.path.join(probe, '.lava_dtss_probe'))


def write_json(path: str, obj):
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2) + '\n'), mode='w')


def rng_state() -> dict:
    """torch, numpy and python RNG states as tensors/lists (``weights_only``-safe)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        'torch': torch.get_rng_state(),
        'numpy': {'keys': torch.from_numpy(np_state[1].astype(np.int64)),
                  'pos': int(np_state[2]), 'has_gauss': int(np_state[3]),
                  'cached_gaussian': float(np_state[4])},
        # gauss_next: random.gauss's second value, kept for its next call (the recipes' RandAugment draws it)
        'python': {'version': py_state[0], 'state': list(py_state[1]), 'gauss_next': py_state[2]},
    }


def set_rng_state(state: dict):
    torch.set_rng_state(state['torch'])
    n = state['numpy']
    np.random.set_state(('MT19937', n['keys'].numpy().astype(np.uint32), n['pos'],
                         n['has_gauss'], n['cached_gaussian']))
    p = state['python']
    random.setstate((p['version'], tuple(p['state']), p.get('gauss_next')))


def save_checkpoint(path: str, **payload):
    """Atomic ``torch.save`` of tensors, numbers, strings, lists and dicts only.
    A failed write (torch reports a full disk as ``RuntimeError: [enforce fail at
    inline_container.cc] ... file write failed``) is an ``OSError`` naming ``path``."""
    def save(f):
        try:
            torch.save(payload, f)
        except RuntimeError as e:
            if 'inline_container' not in str(e) and 'PytorchStreamWriter' not in str(e):
                raise
            import errno
            code = errno.ENOSPC if _full(path) else errno.EIO
            raise OSError(code, f'{os.strerror(code)} (torch: {str(e).strip().splitlines()[0][:160]})',
                          path) from None
    atomic_write(path, save)


def _full(path: str) -> bool:
    """Whether the file system of ``path`` has (almost) no free space left."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
        return st.f_bavail * st.f_frsize < 1 << 20
    except OSError:
        return False


def load_checkpoint(path: str) -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary objects)."""
    if not os.path.isfile(path):
        raise TrainingError(f'checkpoint {path} does not exist')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # corrupt, truncated, or holds objects
        raise TrainingError(f'cannot load checkpoint {path}: {type(e).__name__}: {e}. '
                            'Expected a checkpoint written by scripts/train_slayer.py') from None


@torch.no_grad()
def evaluate(model: SpikingViT, loader, max_batches: int | None = None) -> dict:
    """Accuracy and per-layer firing rates of ``model`` on ``loader``.

    Firing rate: spikes per neuron per time step over all ``T_max`` steps
    (``rate``) and over the layer's active steps only (``rate_active``).
    """
    was_training = model.training
    model.eval()
    spikes = {n: 0.0 for n, _ in model.gated_layers()}
    neurons = dict.fromkeys(spikes, 0)
    correct = total = 0
    try:
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            logits, out = model.forward_with_spikes(x.to(model.head.weight.device, model.head.weight.dtype))
            for n, s in out.items():
                spikes[n] += float(s.sum())
                neurons[n] += s[..., 0].numel()
            correct += int((logits.argmax(1).cpu() == y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    t_max = model.cfg.t_max
    report = model.time_step_report()
    rates = {n: spikes[n] / max(1, neurons[n]) / t_max for n in spikes}
    rates_active = {n: spikes[n] / max(1, neurons[n]) / report['active_steps'][n] for n in spikes}
    return {'accuracy': correct / max(1, total), 'samples': total,
            'firing_rate': rates, 'firing_rate_active': rates_active, **report}


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, loader, num_images: int):
    """Re-estimate every BatchNorm's mean and variance for the current weights, as
    the deployed network will see its inputs: layer by layer in data-flow order,
    each one's statistics are the exact average over ``num_images`` images of
    ``loader`` of its input in eval mode, with every earlier layer already using
    its re-estimated statistics (one forward pass per BatchNorm).

    Why: the running averages of training mix statistics of many past weights, and
    statistics estimated in train mode (each layer fed by batch-normalised earlier
    layers) do not describe the eval-mode network either: spiking thresholds amplify
    the small differences layer after layer (a DTSS model on Fashion-MNIST scored
    78.4% with train-mode estimates, 82.7% with these). The export folds exactly
    these statistics into each layer's integer weights and bias; the result is still
    one affine map per channel.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    device, dtype = model.head.weight.device, model.head.weight.dtype
    batches, seen = [], 0
    for x, _ in loader:
        if seen >= num_images:
            break
        x = x[:num_images - seen]
        batches.append(x.to(device, dtype))
        seen += x.shape[0]
    was_training = model.training
    momenta = [m.momentum for m in norms]
    try:
        for norm in norms:   # modules() lists them in data-flow order (the model registers them so)
            model.eval()
            norm.train()
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average: every batch weighs by its count
            for x in batches:
                model(x)
            norm.eval()
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom
        model.train(was_training)


def init_weights(model: SpikingViT, path: str):
    """Copy the weights and BatchNorm statistics of checkpoint ``path`` into
    ``model`` (same preset; the DTSS gates are skipped: T_max may differ)."""
    ckpt = load_checkpoint(path)
    try:
        state = {k: v for k, v in ckpt['model'].items() if not is_gate_parameter(k)}
        cfg = dict(ckpt['config'])
    except (KeyError, TypeError, AttributeError):
        raise TrainingError(f'{path} is not a checkpoint of scripts/train_slayer.py '
                            '(expected the keys model and config)') from None
    mine = model.cfg.to_dict()
    if {k: v for k, v in cfg.items() if k != 't_max'} != {k: v for k, v in mine.items() if k != 't_max'}:
        raise TrainingError(f'{path} holds a different architecture than preset {model.cfg.name} '
                            '(only T_max may differ for --init-from)')
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise TrainingError(f'--init-from {path}: {k} holds NaN or infinite values (a diverged run?); '
                                'start from a checkpoint with finite weights')
    mine_state = model.state_dict()
    for k, v in state.items():    # load_state_dict would raise a many-line RuntimeError (issue 26)
        if k in mine_state and hasattr(v, 'shape') and tuple(v.shape) != tuple(mine_state[k].shape):
            raise TrainingError(f'--init-from {path}: {k} has shape {tuple(v.shape)}, preset '
                                f'{model.cfg.name} needs {tuple(mine_state[k].shape)}; start from a '
                                'checkpoint of the same preset and --config fields')
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not is_gate_parameter(k)]
    if missing or unexpected:
        raise TrainingError(f'{path}: state does not match the model (missing {missing[:3]}, '
                            f'unexpected {unexpected[:3]})')


def learned_gate_steps(path: str, t_max: int = None) -> dict:
    """Active steps of every DTSS gate of checkpoint ``path``, by the gate's
    module name (``blocks.0.attn.q.gate`` -> 1..T_max): the gates a DTSS run
    learned, to set in another model (``train_slayer.py --gates-from``).
    Refused (:class:`TrainingError`): a fixed-T or ANN run (its gates are
    disabled and never trained) and, with ``t_max``, a run of another T_max.

    ``path`` may also be the run's ``metrics.json`` (or its model card): its
    ``active_steps`` per layer are the steps its gates chose, so a study can
    re-fit from its committed results without the run's checkpoint."""
    if path.endswith('.json'):
        return _gate_steps_of_metrics(path, t_max)
    ckpt = load_checkpoint(path)
    args = ckpt.get('args') if isinstance(ckpt, dict) and isinstance(ckpt.get('args'), dict) else {}
    ckpt_t_max = ckpt.get('config', {}).get('t_max') if isinstance(ckpt, dict) and isinstance(
        ckpt.get('config'), dict) else None
    _check_gate_source(path, args.get('ann'), isinstance(ckpt, dict) and (
        ckpt.get('dtss', True) is False or args.get('fixed_t') is not None), ckpt_t_max, t_max, 'checkpoint')
    try:
        state = ckpt['model']
        keys = sorted(k for k in state if is_gate_parameter(k))
    except (KeyError, TypeError, AttributeError, RuntimeError, ValueError):
        raise TrainingError(f'{path} is not a checkpoint of scripts/train_slayer.py '
                            '(expected the keys config and model, with DTSS gates)') from None
    for k in keys:   # a length [1], or the earlier formulation's scores [T_max]
        v = state[k]
        if not isinstance(v, torch.Tensor) or v.dim() != 1 or v.numel() == 0:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise TrainingError(f'{path}: DTSS gate {k} has shape {shape}; expected a length of shape (1,) '
                                '(or one score per time step)')
        if not bool(torch.isfinite(v).all()):
            raise TrainingError(f'{path}: DTSS gate {k} holds NaN or infinite values')
    try:
        state = upgrade_gate_state(state)
        names = sorted({k[:-len('.length')] for k in state if k.endswith('gate.length')})
        steps = {}
        if names:
            t_max = int(ckpt['config']['t_max'])
            steps = {n: chosen_steps(state[n + '.length'], t_max, state.get(n + '.frozen_steps', 0)) for n in names}
    except (KeyError, TypeError, AttributeError, RuntimeError, ValueError):
        raise TrainingError(f'{path} is not a checkpoint of scripts/train_slayer.py '
                            '(expected the keys config and model, with DTSS gates)') from None
    if not steps:
        raise TrainingError(f'{path} holds no DTSS gates (a fixed-T or ANN run?)')
    return steps


def _check_gate_source(path, ann, fixed, theirs, t_max, what):
    """Refuse a ``--gates-from`` source whose gates were never trained (an ANN or
    fixed-T run) or that ran another T_max than ``t_max`` (``theirs``)."""
    if ann or fixed:
        kind = 'an ANN' if ann else 'a fixed-T'
        raise TrainingError(f'{path} is {kind} run: its DTSS gates are disabled and never trained; '
                            f'--gates-from needs a DTSS {what}')
    if t_max is not None and theirs is not None and int(theirs) != int(t_max):
        raise TrainingError(f'{path} was trained with T_max = {theirs}, this run has T_max = {t_max}; '
                            '--gates-from needs a DTSS run of the same T_max')


def _gate_steps_of_metrics(path: str, t_max: int = None) -> dict:
    """``learned_gate_steps`` of a DTSS run's metrics.json or model card."""
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TrainingError(f'cannot read {path}: {getattr(e, "strerror", None) or e}') from None
    if not isinstance(m, dict) or not isinstance(m.get('active_steps'), dict) or not m['active_steps']:
        raise TrainingError(f'{path} holds no active_steps (expected the metrics.json or model card of a '
                            'DTSS run of scripts/train_slayer.py)')
    _check_gate_source(path, m.get('ann'), m.get('dtss') is False, m.get('t_max'), t_max, 'run')
    steps = m['active_steps']
    bad = [k for k, v in steps.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if bad:
        raise TrainingError(f'{path}: active_steps[{bad[0]!r}] = {steps[bad[0]]!r}, expected a whole number >= 1')
    return {f'{layer}.gate': int(k) for layer, k in steps.items()}


# ViTConfig fields that are whole numbers, and the largest value a checkpoint may hold
INT_FIELDS = {'in_channels': 1 << 12, 'image_size': 1 << 12, 'num_classes': 1 << 16, 'embed_dim': 1 << 14,
              'depth': 1 << 8, 'heads': 1 << 10, 'mlp_ratio': 1 << 6, 't_max': 1 << 8}


def model_from_checkpoint(ckpt, path):
    """``(model, training args)`` of a checkpoint's content, every part checked
    first: ``ValueError`` with one line naming what is wrong (a key that is
    missing, of the wrong type, or a weight of the wrong shape)."""
    def bad(msg):
        raise ValueError(f'{path} is not a lava_dtss training checkpoint: {msg} '
                         '(expected a checkpoint.pt written by scripts/train_slayer.py)')
    if not isinstance(ckpt, dict):
        bad(f'it holds a {type(ckpt).__name__}, expected a dict with keys config, model, args')
    for key in ('config', 'model'):
        if key not in ckpt:
            bad(f'missing key {key!r}')
        if not isinstance(ckpt[key], dict):
            bad(f'{key!r} is a {type(ckpt[key]).__name__}, expected a dict')
    train_args = ckpt.get('args', {})
    if not isinstance(train_args, dict):
        bad(f"'args' is a {type(train_args).__name__}, expected a dict")
    for key in ('dataset', 'data_dir'):
        if train_args.get(key) is not None and not isinstance(train_args[key], str):
            bad(f"args[{key!r}] = {train_args[key]!r}, expected a string")
    dtss = ckpt.get('dtss', True)
    if not isinstance(dtss, (bool, int)) or dtss not in (0, 1):
        bad(f"'dtss' = {dtss!r}, expected true or false")
    cfg = ckpt['config']
    for key, top in INT_FIELDS.items():
        v = cfg.get(key)
        if key in cfg and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top):
            bad(f'config[{key!r}] = {v!r}, expected a whole number in 1..{top}')
    try:
        config = ViTConfig.from_dict(cfg)
        model = SpikingViT(config, dtss=bool(dtss))
    except Exception as e:   # unknown or missing fields, values the model cannot be built with
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        bad(f"'config' does not describe a lava_dtss model ({type(e).__name__}: {first})")
    expected = model.state_dict()
    state = upgrade_gate_state(ckpt['model'], config.t_max)   # gates of the earlier formulation
    missing = [k for k in expected if k not in state]
    if missing:
        bad(f"'model' misses {len(missing)} weight(s), e.g. {missing[0]!r}")
    extra = [k for k in state if k not in expected]
    if extra:
        bad(f"'model' holds {len(extra)} unknown weight(s), e.g. {extra[0]!r}")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            bad(f"'model'[{k!r}] is a {type(v).__name__}, expected a tensor")
        if tuple(v.shape) != tuple(expected[k].shape):
            bad(f"'model'[{k!r}] has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
        if v.is_floating_point() != expected[k].is_floating_point() or v.is_complex():
            bad(f"'model'[{k!r}] has dtype {v.dtype}, expected {expected[k].dtype}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad(f"'model'[{k!r}] holds NaN or infinite values")
    model.load_state_dict(state)
    return model, train_args


def init_distributed(device: str | None = None):
    """``(rank, world_size, device)`` from torchrun's environment; initialises
    the process group (nccl on GPU, gloo on CPU) when ``WORLD_SIZE > 1``.
    ``device``: the run's (``cuda`` is ``cuda:LOCAL_RANK``); None: CUDA where available."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local = int(os.environ.get('LOCAL_RANK', '0'))
    if device is not None:
        device = torch.device(device)
        if device.type == 'cuda':
            device = torch.device('cuda', local if device.index is None else device.index)
            torch.cuda.set_device(device)
    elif torch.cuda.is_available():
        device = torch.device('cuda', local)
        torch.cuda.set_device(device)
    else:
        device = torch.device('cpu')
    if world > 1:
        backend = 'nccl' if device.type == 'cuda' else 'gloo'
        torch.distributed.init_process_group(backend=backend)
    return rank, world, device
