"""The CUBA-LIF neuron's forward and backward as one compiled CPU loop each.

``lava_dtss.model.neuron`` holds the dynamics and their PyTorch form; this module
builds (once per machine, with ``torch.utils.cpp_extension``, cached under
``build_directory()``) the same arithmetic as a C++ loop that reads the
input once and writes spikes and voltage once, instead of about ten passes over
memory per time step. Same integers, so the same spikes; the surrogate
gradient agrees with the PyTorch path to float rounding.

Layout: ``[N, T, S]`` contiguous (sample, time, neuron), the memory order of a
convolution over time folded into the batch. ``torch.get_num_threads()``
threads share the samples.

Set ``LAVA_DTSS_KERNEL=0`` to use the PyTorch path (what CUDA tensors use).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import sys
import time
import warnings

from ..loihi2 import STATE_SCALE

_SOURCE = r'''
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

// One time step of S neurons; the branches are template parameters so that the loop vectorises.
template <typename in_t, typename st_t, bool DECAY_U, bool DECAY_V, bool BIAS>
static void fwd_step(const in_t* __restrict__ x, const st_t* __restrict__ bias, in_t* __restrict__ spikes,
                     st_t* __restrict__ volt, st_t* __restrict__ u, st_t* __restrict__ v, int64_t S,
                     st_t a_u, st_t a_v, st_t thr) {
  for (int64_t s = 0; s < S; ++s) {
    const st_t xi = static_cast<st_t>(std::trunc(x[s] * in_t(STATE_SCALE)));
    const st_t uu = DECAY_U ? std::trunc(u[s] * a_u) + xi : xi;
    st_t vv = DECAY_V ? std::trunc(v[s] * a_v) + uu : uu;
    if (BIAS) vv += bias[s];
    u[s] = uu;
    volt[s] = vv;
    const bool fired = vv >= thr;
    spikes[s] = fired ? in_t(1) : in_t(0);
    v[s] = fired ? st_t(0) : vv;
  }
}

// x [N, T, S] (in_t, SLAYER units) -> spikes [N, T, S] (in_t), voltage before reset [N, T, S] (st_t, 1/4096 units)
template <typename in_t, typename st_t, bool DECAY_U, bool DECAY_V, bool BIAS>
void fwd(const in_t* x, const st_t* bias, in_t* spikes, st_t* volt, int64_t N, int64_t T, int64_t S,
         st_t a_u, st_t a_v, st_t thr) {
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<st_t> u(S), v(S);
    for (int64_t n = n0; n < n1; ++n) {
      std::fill(u.begin(), u.end(), st_t(0));
      std::fill(v.begin(), v.end(), st_t(0));
      for (int64_t t = 0; t < T; ++t) {
        const int64_t o = (n * T + t) * S;
        fwd_step<in_t, st_t, DECAY_U, DECAY_V, BIAS>(x + o, bias, spikes + o, volt + o, u.data(), v.data(), S,
                                                    a_u, a_v, thr);
      }
    }
  });
}

template <typename in_t, typename st_t>
void fwd_dispatch(const in_t* x, const st_t* bias, in_t* spikes, st_t* volt, int64_t N, int64_t T, int64_t S,
                  st_t a_u, st_t a_v, st_t thr) {
  const bool du = a_u != st_t(0), dv = a_v != st_t(0), b = bias != nullptr;
#define LAVA_DTSS_FWD(DU, DV, B) if (du == DU && dv == DV && b == B) \
    return fwd<in_t, st_t, DU, DV, B>(x, bias, spikes, volt, N, T, S, a_u, a_v, thr);
  LAVA_DTSS_FWD(false, false, false) LAVA_DTSS_FWD(false, false, true) LAVA_DTSS_FWD(false, true, false)
  LAVA_DTSS_FWD(false, true, true) LAVA_DTSS_FWD(true, false, false) LAVA_DTSS_FWD(true, false, true)
  LAVA_DTSS_FWD(true, true, false) LAVA_DTSS_FWD(true, true, true)
#undef LAVA_DTSS_FWD
}

// grad x surrogate, then the transposed voltage and current integrators (reverse time):
// gv[t] = g[t] + a_v gv[t+1], gu[t] = gv[t] + a_u gu[t+1]
template <typename st_t>
void bwd(const st_t* grad, const st_t* surrogate, st_t* out, int64_t N, int64_t T, int64_t S, st_t a_u, st_t a_v) {
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<st_t> gv_buf(S), gu_buf(S);
    st_t* __restrict__ gv = gv_buf.data();
    st_t* __restrict__ gu = gu_buf.data();
    for (int64_t n = n0; n < n1; ++n) {
      std::fill(gv, gv + S, st_t(0));
      std::fill(gu, gu + S, st_t(0));
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t o = (n * T + t) * S;
        const st_t* __restrict__ g = grad + o;
        const st_t* __restrict__ sg = surrogate + o;
        st_t* __restrict__ y = out + o;
        for (int64_t s = 0; s < S; ++s) {
          const st_t v = g[s] * sg[s] + a_v * gv[s];
          const st_t u = v + a_u * gu[s];
          gv[s] = v;
          gu[s] = u;
          y[s] = u;
        }
      }
    }
  });
}

std::vector<torch::Tensor> cuba_forward(torch::Tensor x, torch::Tensor bias, bool state_double,
                                        double a_u, double a_v, double thr) {
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous() && x.device().is_cpu(), "x must be a contiguous CPU [N, T, S]");
  const auto st = state_double ? torch::kFloat64 : torch::kFloat32;
  TORCH_CHECK(bias.numel() == 0 || (bias.numel() == x.size(2) && bias.is_contiguous() && bias.scalar_type() == st),
              "bias must be [S] in the state dtype");
  auto spikes = torch::empty_like(x);
  auto volt = torch::empty(x.sizes(), x.options().dtype(st));
  const int64_t N = x.size(0), T = x.size(1), S = x.size(2);
  if (x.scalar_type() == torch::kFloat32 && !state_double) {
    fwd_dispatch<float, float>(x.data_ptr<float>(), bias.numel() ? bias.data_ptr<float>() : nullptr, spikes.data_ptr<float>(),
                      volt.data_ptr<float>(), N, T, S, a_u, a_v, thr);
  } else if (x.scalar_type() == torch::kFloat32) {
    fwd_dispatch<float, double>(x.data_ptr<float>(), bias.numel() ? bias.data_ptr<double>() : nullptr,
                       spikes.data_ptr<float>(), volt.data_ptr<double>(), N, T, S, a_u, a_v, thr);
  } else {
    TORCH_CHECK(x.scalar_type() == torch::kFloat64 && state_double, "x must be float32, or float64 with a float64 state");
    fwd_dispatch<double, double>(x.data_ptr<double>(), bias.numel() ? bias.data_ptr<double>() : nullptr,
                        spikes.data_ptr<double>(), volt.data_ptr<double>(), N, T, S, a_u, a_v, thr);
  }
  return {spikes, volt};
}

torch::Tensor cuba_backward(torch::Tensor grad, torch::Tensor surrogate, double a_u, double a_v) {
  TORCH_CHECK(grad.sizes() == surrogate.sizes() && grad.dim() == 3 && grad.is_contiguous() &&
              surrogate.is_contiguous() && grad.scalar_type() == surrogate.scalar_type() && grad.device().is_cpu(),
              "grad and surrogate must be contiguous CPU [N, T, S] of one dtype");
  auto out = torch::empty_like(grad);
  const int64_t N = grad.size(0), T = grad.size(1), S = grad.size(2);
  if (grad.scalar_type() == torch::kFloat32) {
    bwd<float>(grad.data_ptr<float>(), surrogate.data_ptr<float>(), out.data_ptr<float>(), N, T, S, a_u, a_v);
  } else {
    TORCH_CHECK(grad.scalar_type() == torch::kFloat64, "grad must be float32 or float64");
    bwd<double>(grad.data_ptr<double>(), surrogate.data_ptr<double>(), out.data_ptr<double>(), N, T, S, a_u, a_v);
  }
  return out;
}
'''.replace('STATE_SCALE', str(STATE_SCALE))   # the same text as the literal: the cached build stays valid

_module = None
_failed = None
STALE_LOCK_S = 600   # a build takes about a minute; a lock older than this belongs to a killed build
LOCK_WAIT_S = 300    # the longest wait for another process's build, with a message, before the PyTorch path
NAME = 'lava_dtss_cuba'
_DONE = 'built.ok'   # written after a build that loaded: holds the build key


def _flags() -> list:
    # -fno-trapping-math lets the spike select vectorise (no change to any result: floating-point
    # exceptions do not trap in PyTorch); no -ffast-math, no FMA: the arithmetic stays as written
    flags = ['-O3', '-fno-trapping-math']
    if platform.machine() in ('x86_64', 'AMD64'):
        flags.append('-msse4.1')   # vectorised trunc (roundps); every x86-64 CPU of the last 15 years
    return flags


def build_inputs() -> dict:
    """What the compiled module depends on: its source and flags, the torch
    version and headers (include paths), the Python ABI and the environment
    (``sys.prefix``: one virtual environment's build never replaces another's)."""
    import sysconfig
    import torch
    from torch.utils.cpp_extension import include_paths
    return {'source': hashlib.sha256(_SOURCE.encode()).hexdigest(), 'flags': _flags(),
            'torch': torch.__version__, 'abi': sysconfig.get_config_var('EXT_SUFFIX') or '',
            'python': sys.version, 'include': include_paths(), 'prefix': sys.prefix}


def build_key(inputs: dict = None) -> str:
    """Short hash of :func:`build_inputs`: the build folder's name carries it."""
    blob = json.dumps(build_inputs() if inputs is None else inputs, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_directory() -> str:
    """Where the loop is built and cached: ``$TORCH_EXTENSIONS_DIR`` or
    ``~/.cache/torch_extensions``, in ``lava_dtss_cuba_<python>_<build key>``."""
    root = os.environ.get('TORCH_EXTENSIONS_DIR') or os.path.join(os.path.expanduser('~'), '.cache',
                                                                   'torch_extensions')
    return os.path.join(root, f'{NAME}_py{sys.version_info[0]}{sys.version_info[1]}_{build_key()}')


def enabled() -> bool:
    """False when ``LAVA_DTSS_KERNEL=0`` asks for the PyTorch path."""
    return os.environ.get('LAVA_DTSS_KERNEL', '1') != '0'


def _load_built(build: str):
    """The module already built in ``build`` (its ``built.ok`` marker names this
    build key), imported directly: no lock, no compiler; None if not built."""
    import importlib.util
    so = os.path.join(build, f'{NAME}.so')
    marker = os.path.join(build, _DONE)
    try:
        with open(marker) as f:
            if f.read().strip() != build_key():
                return None
    except OSError:
        return None
    if not os.path.isfile(so):
        return None
    import torch  # noqa: F401  (the module links against torch's libraries)
    spec = importlib.util.spec_from_file_location(NAME, so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _owner_dead(lock: str) -> bool:
    """Whether the build that holds ``lock`` is known to be gone: its owner file
    (``lock + '.owner'``, written by :func:`_own_lock`) names a process that no
    longer exists and nobody holds the file's ``flock`` (a live build holds it)."""
    try:
        import fcntl
        with open(lock + '.owner', 'r+') as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False              # a live build holds it
            try:
                pid = int(f.read().strip() or 0)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
    except (OSError, ValueError, ImportError):
        return False                      # no owner file (another tool's build): age decides
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


@contextlib.contextmanager
def _own_lock(lock: str):
    """Hold ``lock + '.owner'`` (our PID, under ``flock``) while this process
    builds, so that a waiter sees at once when the build was killed."""
    f = None
    try:
        import fcntl
        f = open(lock + '.owner', 'a+')
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
    except (OSError, ImportError):
        if f is not None:
            f.close()
        f = None
    try:
        yield
    finally:
        if f is not None:
            with contextlib.suppress(OSError):
                f.seek(0)
                f.truncate()
            f.close()                      # releases the flock


def _wait_for_lock(lock: str) -> None:
    """Wait, at most ``LOCK_WAIT_S`` and saying so, for another process's build
    lock; remove it at once when its owner is dead (:func:`_owner_dead`), or
    when it is stale (older than ``STALE_LOCK_S``: a killed build that left no
    owner file). Raises TimeoutError when a live lock outlasts the wait."""
    if not os.path.exists(lock):
        return
    start, told = time.time(), False
    while os.path.exists(lock):
        try:
            age = time.time() - os.path.getmtime(lock)
        except OSError:
            break
        if age > STALE_LOCK_S or _owner_dead(lock):
            with contextlib.suppress(OSError):
                os.remove(lock)   # left by a build that was killed; PyTorch would wait for it forever
            break
        if time.time() - start > LOCK_WAIT_S:
            raise TimeoutError(f'{lock} held for {age:.0f} s (another build, or a killed one: delete the file)')
        if not told:
            print(f'lava_dtss: waiting for the compiled neuron build lock {lock} '
                  f'(up to {LOCK_WAIT_S} s; delete it if no build is running)', file=sys.stderr, flush=True)
            told = True
        time.sleep(0.5)


def get():
    """The compiled module (``cuba_forward``, ``cuba_backward``), built on first
    use; None when disabled or when it cannot be built here (then one warning
    says why, and the PyTorch path, same spikes, is used). An already-built
    module is imported directly, without PyTorch's build lock."""
    global _module, _failed
    if not enabled():
        return None
    if _module is not None or _failed is not None:   # built, or tried once and failed
        return _module
    try:
        with contextlib.redirect_stderr(io.StringIO()):   # its import prints a CUDA_HOME notice on CPU machines
            from torch.utils.cpp_extension import load_inline
        build = build_directory()
        _module = _load_built(build)
        if _module is not None:
            return _module
        os.makedirs(build, exist_ok=True)
        lock = os.path.join(build, 'lock')
        _wait_for_lock(lock)
        with _own_lock(lock):
            _module = load_inline(NAME, _SOURCE, functions=['cuba_forward', 'cuba_backward'],
                                  extra_cflags=_flags(), build_directory=build, verbose=False)
        with contextlib.suppress(OSError):
            with open(os.path.join(build, _DONE), 'w') as f:
                f.write(build_key())
    except Exception as e:   # no compiler, no headers: the PyTorch path still gives the same spikes
        _failed = f'{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ""}'
        warnings.warn(f'lava_dtss: the compiled CUBA neuron could not be built ({_failed}); '
                      'using the PyTorch path (same spikes, slower training)', RuntimeWarning, stacklevel=2)
        return None
    return _module
