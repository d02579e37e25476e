"""The fused neuron reproduces stock SLAYER CUBA spikes exactly (and its gradients)."""
import numpy as np
import pytest
import torch
from lava.lib.dl.slayer.neuron import cuba

from lava_dtss.model.neuron import FastCubaNeuron, cuba_forward


@pytest.mark.parametrize('params', [
    dict(threshold=1.0, current_decay=1.0, voltage_decay=0.5),     # the ViT's LIF (tau = 2)
    dict(threshold=1.25, current_decay=0.25, voltage_decay=0.03),  # general CUBA, float64 state path
    dict(threshold=0.5, current_decay=1.0, voltage_decay=0.0),     # integrate-and-fire
])
def test_spikes_and_gradients_match_stock_slayer(params):
    torch.manual_seed(0)
    params = dict(params, tau_grad=0.1, scale_grad=1.0)
    x = (torch.randn(8, 16, 6, 6, 8) * 1.5).requires_grad_()
    fast, stock = FastCubaNeuron(**params), cuba.Neuron(**params)
    s_fast, s_stock = fast(x), stock(x)
    assert s_stock.sum() > 0
    assert torch.equal(s_fast, s_stock)
    g = torch.randn(s_fast.shape)  # contiguous, not aliased with any output
    g_fast, = torch.autograd.grad(s_fast, x, g.clone())
    g_stock, = torch.autograd.grad(s_stock, x, g.clone())
    assert torch.allclose(g_fast, g_stock, rtol=1e-5, atol=1e-7)


def test_fixed_point_semantics_of_one_neuron():
    # v halves each step (rounded toward zero in 1/4096 units), spikes when v > theta, resets
    x = torch.tensor([[[0.75, 0.75, 0.75, 0.0, 2.0]]])
    s, v = cuba_forward(x, du=4096, dv=2048, threshold=1.0)
    assert s.tolist() == [[[0, 1, 0, 0, 1]]]
    assert (v / 4096).tolist() == [[[0.75, 1.125, 0.75, 0.375, 2.1875]]]


def test_bias_is_added_to_voltage_every_step():
    x = torch.zeros(1, 1, 4, dtype=torch.float64)
    s, v = cuba_forward(x, du=4096, dv=4096, threshold=1.0, bias=torch.tensor([0.6], dtype=torch.float64))
    assert s.reshape(-1).tolist() == [0, 0, 0, 0]
    s, v = cuba_forward(x, du=4096, dv=0, threshold=1.0, bias=torch.tensor([0.6], dtype=torch.float64))
    assert s.reshape(-1).tolist() == [0, 1, 0, 1]


# ------------------------------------------------ the one fixed-point LIF step (lava_dtss.loihi2)

@pytest.mark.parametrize('du,dv,dtype', [
    (4096, 2048, torch.float32),     # the ViT's LIF: float32 state
    (4096, 2048, torch.float64),     # the deployed (exported) model
    (1234, 4000, torch.float64),     # general decays
    (1, 0, torch.float32),           # a current that barely decays, integrate-and-fire (float64 state)
])
def test_both_neuron_paths_equal_the_one_fixed_point_lif_step(du, dv, dtype):
    """The compiled loop and the PyTorch path of ``cuba_forward`` give, step by
    step, the spikes and the voltage of ``lava_dtss.loihi2.lif_step`` (the
    definition the Lava models use, itself tied to Lava's ``PyLifModelBitAcc`` in
    ``tests/test_lava.py``), on random integer inputs, biases and thresholds in
    SLAYER units (integer / 64), with neurons landing exactly on the threshold.
    The training side neither wraps the current nor clips the voltage, so the
    inputs keep both within 24 bits, where Loihi does neither either (checked)."""
    from lava_dtss.loihi2 import MAX_UV, WEIGHT_SCALE, lif_step
    rng = np.random.default_rng(du + dv)
    n, c, steps, vth = 4, 40, 10, 900
    a_in = rng.integers(-600, 600, (n, c, steps))
    bias = rng.integers(-500, 500, c)
    a_in[:, :8] = (vth - bias[:8])[None, :, None] + (np.arange(steps) % 2)   # on the threshold, then over
    x = torch.from_numpy(a_in / WEIGHT_SCALE).to(dtype)
    b = torch.from_numpy(bias / WEIGHT_SCALE)
    u, v = np.zeros((n, c), np.int64), np.zeros((n, c), np.int64)
    spikes, volt = np.zeros(a_in.shape, bool), np.zeros(a_in.shape, np.int64)
    for t in range(steps):
        spikes[..., t] = lif_step(u, v, a_in[..., t], bias, du, dv, vth)
        volt[..., t] = v
        assert np.abs(u).max() < MAX_UV and np.abs(v).max() < MAX_UV - 1
    assert spikes.any() and not spikes.all() and not spikes[:, :8, 0].any() and spikes[:, :8, 1].all()
    assert _compiled_loop() is not None
    for compiled in (True, False):
        s, vt = cuba_forward(x, du, dv, vth / WEIGHT_SCALE, b, use_compiled=compiled)
        assert np.array_equal(s.numpy().astype(bool), spikes), compiled
        after_reset = torch.where(s.bool(), torch.zeros((), dtype=vt.dtype), vt)
        assert np.array_equal(after_reset.numpy(), volt), compiled


# ------------------------------------------------ the compiled loop (lava_dtss.model.cuba_kernel)

def _compiled_loop():
    from lava_dtss.model import cuba_kernel
    return cuba_kernel.get()


def test_compiled_loop_is_built_here():
    """The machine that runs the suite has a C++ compiler: the compiled path must
    exist, or every test below would compare the PyTorch path with itself."""
    assert _compiled_loop() is not None


@pytest.mark.parametrize('params,dtype,with_bias', [
    ((4096, 2048, 1.0), torch.float32, False),    # the ViT's LIF: float32 state
    ((1024, 123, 1.25), torch.float32, False),    # general decays: float64 state from float32 input
    ((4096, 0, 0.5), torch.float32, False),       # integrate-and-fire
    ((4096, 2048, 1.0), torch.float64, True),     # the fixed-point reference: float64, bias
    ((1024, 123, 1.25), torch.float64, True),
])
def test_compiled_forward_equals_the_pytorch_path(params, dtype, with_bias):
    torch.manual_seed(1)
    du, dv, theta = params
    # integer-valued currents in 1/64 units (as the exported model sees) and large ones (24-bit state)
    x = (torch.randint(-300, 300, (5, 6, 7, 3, 6)) / 64).to(dtype)
    x[0] *= 4000
    bias = (torch.randint(-40, 40, (1, 6, 1, 1)) / 64).to(torch.float64) if with_bias else None
    s_c, v_c = cuba_forward(x, du, dv, theta, bias)
    s_t, v_t = cuba_forward(x, du, dv, theta, bias, use_compiled=False)
    assert s_c.sum() > 0 and torch.equal(s_c, s_t) and torch.equal(v_c, v_t)
    assert s_c.dtype == s_t.dtype and v_c.dtype == v_t.dtype


def test_compiled_gradients_equal_the_pytorch_path(monkeypatch):
    """Training step of the fmnist network: the same spikes in every layer, the
    same logits and bitwise the same gradient of every parameter with the
    compiled loop as with the PyTorch path (LAVA_DTSS_KERNEL=0)."""
    from lava_dtss.model import build_model

    def run(flag):
        monkeypatch.setenv('LAVA_DTSS_KERNEL', flag)
        torch.manual_seed(0)
        model = build_model('fmnist')
        spikes = []
        for m in model.modules():
            if hasattr(m, 'gate') and hasattr(m, 'neuron'):
                m.register_forward_hook(lambda mod, i, o: spikes.append(o.detach().clone()))
        x, y = torch.rand(6, 1, 28, 28), torch.arange(6)
        logits = model(x)
        torch.nn.functional.cross_entropy(logits, y).backward()
        return logits.detach(), spikes, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    compiled, plain = run('1'), run('0')
    assert torch.equal(compiled[0], plain[0])
    assert len(compiled[1]) == 11 and all(torch.equal(a, b) for a, b in zip(compiled[1], plain[1]))
    assert set(compiled[2]) == set(plain[2]) and len(plain[2]) > 30
    for name, g in compiled[2].items():
        assert torch.equal(g, plain[2][name]), name


def test_kernel_build_removes_a_stale_lock_and_falls_back_with_one_warning(tmp_path, monkeypatch):
    """A lock left by a killed build is removed (PyTorch would wait on it forever);
    a failed build gives one warning and the PyTorch path."""
    import os
    import time
    import warnings
    import torch.utils.cpp_extension as ext
    from lava_dtss.model import cuba_kernel
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path))
    monkeypatch.setattr(cuba_kernel, '_module', None)
    monkeypatch.setattr(cuba_kernel, '_failed', None)
    build = cuba_kernel.build_directory()
    os.makedirs(build)
    lock = os.path.join(build, 'lock')
    open(lock, 'w').close()
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    calls = []

    def failing_build(*args, **kwargs):
        calls.append(kwargs['build_directory'])
        raise RuntimeError('Error building extension\ng++: not found')
    monkeypatch.setattr(ext, 'load_inline', failing_build)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert cuba_kernel.get() is None and cuba_kernel.get() is None   # tried once
    assert calls == [build] and not os.path.exists(lock)
    assert len(caught) == 1 and 'g++: not found' in str(caught[0].message)
    x = torch.rand(2, 3, 4)
    s, _ = cuba_forward(x, 4096, 2048, 0.5)   # the PyTorch path still runs
    assert torch.equal(s, cuba_forward(x, 4096, 2048, 0.5, use_compiled=False)[0])


@pytest.mark.parametrize('vth', [4096, 70000, (1 << 17) - 1])
def test_threshold_at_or_above_2_18_is_exact_in_float32(vth):
    """vThMant >= 4096 puts the threshold at vThMant * 64 >= 2**18, where
    ``vThMant * 64 + 0.01`` rounds back to the integer in float32: a voltage
    exactly at the threshold then fired on the training side (float32 state,
    both paths) though Loihi (``lif_step``: ``v > vth << 6``) does not. The
    threshold level is now the exact integer ``vth * 64 + 1`` (failed before)."""
    from lava_dtss.loihi2 import WEIGHT_SCALE, lif_step
    steps = 4
    a_in = np.zeros((2, 3, steps), np.int64)
    a_in[:, 0] = vth            # exactly at the threshold: no spike
    a_in[:, 1] = vth + 1        # one unit above: a spike
    a_in[:, 2] = vth - 1
    u, v = np.zeros((2, 3), np.int64), np.zeros((2, 3), np.int64)
    expect = np.zeros(a_in.shape, bool)
    for t in range(steps):
        expect[..., t] = lif_step(u, v, a_in[..., t], 0, 4096, 4096, vth)
    assert expect[:, 1].all() and not expect[:, 0].any() and not expect[:, 2].any()
    x = torch.from_numpy(a_in / WEIGHT_SCALE).float()
    for compiled in (True, False):
        s, _ = cuba_forward(x, 4096, 4096, vth / WEIGHT_SCALE, use_compiled=compiled)
        assert np.array_equal(s.numpy().astype(bool), expect), compiled


def test_kernel_build_key_follows_what_the_module_depends_on(monkeypatch):
    """The build folder is keyed by the source, flags, torch version, Python ABI,
    include paths and environment (before: by the Python version alone, so two
    virtual environments rebuilt each other's module)."""
    from lava_dtss.model import cuba_kernel
    inputs = cuba_kernel.build_inputs()
    key = cuba_kernel.build_key(inputs)
    assert key == cuba_kernel.build_key() and cuba_kernel.build_directory().endswith('_' + key)
    for field, value in (('source', 'x'), ('torch', '0.0'), ('abi', '.other.so'), ('include', ['/elsewhere']),
                         ('prefix', '/other/venv'), ('flags', ['-O0'])):
        assert cuba_kernel.build_key({**inputs, field: value}) != key, field
    monkeypatch.setattr(cuba_kernel.sys, 'prefix', '/another/venv')
    assert cuba_kernel.build_key() != key


def test_a_stale_lock_does_not_block_loading_a_built_module(tmp_path):
    """A lock left in the build folder by a killed process (fresh, so not yet
    "stale" by age) does not stop a new process from loading the module that is
    already built there: it is imported directly, without the lock, in bounded
    time (before: every later process waited on the lock forever)."""
    import os
    import shutil
    import subprocess
    import sys
    from lava_dtss.model import cuba_kernel
    assert _compiled_loop() is not None
    built = cuba_kernel.build_directory()
    target = tmp_path / os.path.basename(built)
    target.mkdir()
    for name in ('lava_dtss_cuba.so', 'built.ok'):
        shutil.copy(os.path.join(built, name), target / name)
    (target / 'lock').write_text('')
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path))
    code = ('from lava_dtss.model import cuba_kernel; m = cuba_kernel.get(); '
            'print(m.__file__ if m is not None else None)')
    res = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == str(target / 'lava_dtss_cuba.so')
    assert (target / 'lock').exists()   # not taken, not removed: it was never needed


def test_a_live_lock_is_waited_on_with_a_bound_and_a_message(tmp_path, monkeypatch, capsys):
    """Nothing built and a fresh lock: the wait says so on stderr and ends after
    ``LOCK_WAIT_S``, then one warning and the PyTorch path (never a silent,
    endless wait)."""
    import os
    import time
    import warnings
    import torch.utils.cpp_extension as ext
    from lava_dtss.model import cuba_kernel
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path))
    monkeypatch.setattr(cuba_kernel, '_module', None)
    monkeypatch.setattr(cuba_kernel, '_failed', None)
    monkeypatch.setattr(cuba_kernel, 'LOCK_WAIT_S', 1)
    monkeypatch.setattr(ext, 'load_inline', lambda *a, **k: pytest.fail('built under a live lock'))
    build = cuba_kernel.build_directory()
    os.makedirs(build)
    open(os.path.join(build, 'lock'), 'w').close()
    start = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert cuba_kernel.get() is None
    assert time.time() - start < 10
    assert 'waiting for the compiled neuron build lock' in capsys.readouterr().err
    assert len(caught) == 1 and 'TimeoutError' in str(caught[0].message)
