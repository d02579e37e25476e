"""Tests for scripts/train_slayer.py (and lava_dtss.training): CLI, outputs,
exact resume, checkpoint safety, NaN handling, bad arguments, multi-process.

Training runs are tiny (preset ``tiny`` on scikit-learn digits, a few batches
per epoch through the hidden ``--max-batches``) and run as subprocesses, so
exit codes and stderr are those a user sees.  Every run has OMP_NUM_THREADS=1,
which keeps the numbers reproducible and the machine responsive.
"""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import torch
from lava_dtss.training import TrainingError, learned_gate_steps  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'train_slayer.py')
FAST = ['--max-batches', '2', '--batch-size', '8', '--no-export', '--freeze-scores', '1', '--eval-every', '1']
TIMEOUT = 180


# ---------------------------------------------------------------- helpers

def _env():
    env = dict(os.environ)
    env['OMP_NUM_THREADS'] = '1'
    for name in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        env.pop(name, None)  # a plain run is single-process even if pytest runs under torchrun
    return env


def _run(args, prefix=None):
    """Run python with ``prefix`` (default: the script) and ``args``; on a
    timeout, kill the whole process group (torchrun's workers too) and fail."""
    cmd = [sys.executable] + (prefix if prefix is not None else [SCRIPT]) + [str(a) for a in args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f'timed out after {TIMEOUT} s: {" ".join(cmd)}\n{stdout[-2000:]}\n{stderr[-4000:]}')
    except BaseException:  # e.g. Ctrl-C: leave no workers behind
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _train(out, *extra):
    proc = _run(['--out', out, *FAST, *extra])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _stderr_lines(stderr):
    # tqdm redraws with carriage returns: split on them too, as a terminal would
    return [line.strip() for line in re.split(r'[\r\n]', stderr) if line.strip()]


def _error_lines(stderr):
    return [line for line in _stderr_lines(stderr) if line.startswith('error:')]


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def _assert_identical(a, b, where='checkpoint'):
    """Recursive equality; tensors must match bitwise (dtype, shape, values)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f'{where} differs'
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f'{where}: keys {set(a) ^ set(b)}'
        for k in a:
            _assert_identical(a[k], b[k], f'{where}[{k!r}]')
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f'{where}[{i}]')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


def _read_log(out):
    with open(os.path.join(out, 'log.jsonl')) as f:
        text = f.read()
    assert text.endswith('\n')
    return [json.loads(line) for line in text.splitlines()]


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def script():
    """scripts/train_slayer.py imported as a module (for its argument parser)."""
    spec = importlib.util.spec_from_file_location('train_slayer_under_test', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def run_a(tmp_path_factory):
    """Run A: 2 epochs straight."""
    out = str(tmp_path_factory.mktemp('run_a'))
    proc = _train(out, '--epochs', '2')
    return out, proc


# ---------------------------------------------------------------- 1. --help

def test_help_documents_every_option(script, capsys, monkeypatch):
    monkeypatch.setenv('COLUMNS', '200')
    with pytest.raises(SystemExit) as e:
        script.parse_args(['--help'])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ('--dataset', '--preset', '--t-max', '--fixed-t', '--lambda-m', '--mask-categories',
                '--epochs', '--batch-size', '--lr', '--seed', '--out', '--resume'):
        assert re.search(re.escape(opt) + r'\b', text), f'{opt} missing from --help'
    assert '--max-batches' not in text  # test-only option stays hidden
    assert 'ranks identical' in text  # the multi-process check is documented


# ---------------------------------------------------------------- 2. outputs

def test_short_run_writes_log_and_metrics(run_a):
    out, proc = run_a
    log = _read_log(out)
    assert [line['epoch'] for line in log] == [1, 2]
    for line in log:
        for key in ('epoch', 'train_loss', 'train_acc', 'test_acc', 'avg_steps'):
            assert key in line, key
        assert 0.0 <= line['train_acc'] <= 1.0 and 0.0 <= line['test_acc'] <= 1.0
        assert line['train_loss'] > 0 and line['avg_steps'] > 0
    with open(os.path.join(out, 'metrics.json')) as f:
        metrics = json.load(f)
    for key in ('test_accuracy', 'active_steps', 'avg_steps', 'avg_steps_weighted', 'firing_rate'):
        assert key in metrics, key
    assert 0.0 <= metrics['test_accuracy'] <= 1.0
    steps = metrics['active_steps']
    assert isinstance(steps, dict) and steps
    assert all(isinstance(v, int) and 1 <= v <= metrics['t_max'] for v in steps.values())
    assert metrics['avg_steps'] == pytest.approx(sum(steps.values()) / len(steps))
    assert set(metrics['firing_rate']) == set(steps)
    assert not os.path.exists(os.path.join(out, 'model.net'))  # --no-export
    assert 'Traceback' not in proc.stderr


# ---------------------------------------------------------------- 3. exact resume

def test_resume_is_bitwise_exact(run_a, tmp_path):
    out_a, _ = run_a
    out_b = str(tmp_path / 'run_b')
    _train(out_b, '--epochs', '1')
    assert _load(os.path.join(out_b, 'checkpoint.pt'))['epoch'] == 1
    proc = _train(out_b, '--epochs', '2', '--resume')
    assert 'resumed' in proc.stdout

    a = _load(os.path.join(out_a, 'checkpoint.pt'))
    b = _load(os.path.join(out_b, 'checkpoint.pt'))
    assert a['epoch'] == b['epoch'] == 2
    assert set(a['model']) == set(b['model'])
    for name in a['model']:
        assert torch.equal(a['model'][name], b['model'][name]), f'model tensor {name} differs'
    _assert_identical(a['optimizer'], b['optimizer'], 'optimizer')
    # everything else too (optimizers, scheduler, config), except the command-line
    # args (B's differ) and python's `random` state: the script does not seed
    # `random` and nothing in training draws from it, so it is not compared
    assert set(a) == set(b)
    for key in set(a) - {'model', 'args', 'rng'}:
        _assert_identical(a[key], b[key], key)
    _assert_identical(a['rng']['torch'], b['rng']['torch'], "rng['torch']")
    _assert_identical(a['rng']['numpy'], b['rng']['numpy'], "rng['numpy']")

    # the resumed log continues the first one and matches run A line by line
    # (except wall time, and the next-epoch lr of B's first run, which had --epochs 1)
    log_a, log_b = _read_log(out_a), _read_log(out_b)
    for line in log_a + log_b:
        line.pop('time_s')
    log_a[0].pop('lr'), log_b[0].pop('lr')
    assert log_a == log_b


def test_train_is_a_python_function_that_equals_the_command_line(run_a, tmp_path):
    """``lava_dtss.train(...)`` in this process with run A's options trains
    bitwise the same model and reports the same metrics as the command line."""
    import numpy as np
    import lava_dtss
    out = str(tmp_path / 'python')
    threads, torch_rng, np_rng = torch.get_num_threads(), torch.get_rng_state(), np.random.get_state()
    try:
        metrics = lava_dtss.train(out=out, epochs=2, max_batches=2, batch_size=8, no_export=True, freeze_scores=1)
    finally:   # train sets the threads (1 for the tiny preset) and seeds every RNG, as a fresh process would
        torch.set_num_threads(threads)
        torch.set_rng_state(torch_rng)
        np.random.set_state(np_rng)
    a, b = _load(os.path.join(run_a[0], 'checkpoint.pt')), _load(os.path.join(out, 'checkpoint.pt'))
    _assert_identical(a['model'], b['model'], 'model')
    with open(os.path.join(run_a[0], 'metrics.json')) as f:
        cli = json.load(f)
    assert metrics['command'].startswith('lava_dtss.train(') and cli['command'].startswith('python ')
    assert {k: v for k, v in metrics.items() if k != 'command'} == {k: v for k, v in cli.items() if k != 'command'}
    with pytest.raises(ValueError, match='--epochs must be >= 1'):
        lava_dtss.train(out=out, epochs=0)


# ---------------------------------------------------------------- 4. checkpoint safety

def test_checkpoint_loads_weights_only(run_a):
    out, _ = run_a
    ckpt = _load(os.path.join(out, 'checkpoint.pt'))
    assert {'model', 'optimizer', 'scheduler', 'epoch', 'rng', 'config'} <= set(ckpt)
    assert ckpt['epoch'] == 2
    assert all(isinstance(t, torch.Tensor) for t in ckpt['model'].values())
    # atomic writes leave no temporary files behind
    assert not [f for f in os.listdir(out) if f.startswith('.') and f != '.lock']


def test_corrupt_checkpoint_is_a_clean_error(run_a, tmp_path):
    out = str(tmp_path / 'corrupt')
    shutil.copytree(run_a[0], out)
    path = os.path.join(out, 'checkpoint.pt')
    with open(path, 'rb') as f:
        raw = f.read()
    with open(path, 'wb') as f:
        f.write(raw[:len(raw) // 2])
    proc = _run(['--out', out, *FAST, '--epochs', '3', '--resume'])
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr[-3000:]
    assert path in errors[0] and 'checkpoint' in errors[0]


# ---------------------------------------------------------------- 5. NaN loss

# Runs the script as __main__ with the model's training output turned into NaN
# from its second training forward pass on (so one real optimizer step happens
# first): the loss becomes non-finite and the script must stop cleanly.
NAN_WRAPPER = '''
import runpy, sys
sys.path.insert(0, '.')
import lava_dtss.model as model
forward, calls = model.SpikingViT.forward, [0]
def poisoned(self, x):
    out = forward(self, x)
    if self.training:
        calls[0] += 1
        if calls[0] >= 2:
            out = out * float('nan')
    return out
model.SpikingViT.forward = poisoned
sys.argv = ['scripts/train_slayer.py'] + sys.argv[1:]
runpy.run_path('scripts/train_slayer.py', run_name='__main__')
'''


def test_nan_loss_stops_and_keeps_last_checkpoint(run_a, tmp_path):
    out = str(tmp_path / 'nan')
    shutil.copytree(run_a[0], out)
    path = os.path.join(out, 'checkpoint.pt')
    with open(path, 'rb') as f:
        before = f.read()
    log_before = _read_log(out)

    proc = _run(['--out', out, *FAST, '--epochs', '4', '--resume'], prefix=['-c', NAN_WRAPPER])
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr[-3000:]
    msg = errors[0]
    assert 'loss' in msg and 'nan' in msg.lower() and 'epoch 3' in msg and 'batch 2' in msg, msg
    assert path in msg

    with open(path, 'rb') as f:
        assert f.read() == before  # byte-identical: the failed epoch saved nothing
    assert _load(path)['epoch'] == 2
    assert _read_log(out) == log_before
    assert not [f for f in os.listdir(out) if f.startswith('.') and f != '.lock']


# ---------------------------------------------------------------- 6. bad arguments

@pytest.mark.parametrize('argv, option', [
    (['--mask-categories', 'foo'], '--mask-categories'),
    (['--epochs', '0'], '--epochs'),
])
def test_bad_arguments_exit_2(script, capsys, argv, option):
    with pytest.raises(SystemExit) as e:
        script.parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert option in err and 'error:' in err
    if option == '--mask-categories':
        assert 'foo' in err


def test_missing_data_dir_is_a_clean_error(tmp_path):
    out = str(tmp_path / 'cifar')
    proc = _run(['--dataset', 'cifar10', '--out', out, '--epochs', '1'])
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and '--data-dir' in errors[0], proc.stderr[-3000:]
    assert not os.path.exists(out)


# ---------------------------------------------------------------- 7. multi-process

def test_torchrun_two_ranks_stay_identical(tmp_path):
    out = str(tmp_path / 'ddp')
    launcher = ['-m', 'torch.distributed.run', '--nproc_per_node', '2',
                '--master_port', str(_free_port()), SCRIPT]
    proc = _run(['--out', out, '--epochs', '1', *FAST], prefix=launcher)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert '2 process(es)' in proc.stdout
    digests = re.findall(r'^ranks identical: ([0-9a-f]{64})$', proc.stdout, re.M)
    assert len(digests) == 1, proc.stdout[-2000:]
    assert [line['epoch'] for line in _read_log(out)] == [1]
    ckpt = _load(os.path.join(out, 'checkpoint.pt'))
    assert ckpt['epoch'] == 1
    # the agreed hash is that of the model rank 0 saved
    h = hashlib.sha256()
    for name, t in ckpt['model'].items():
        h.update(name.encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    assert digests[0] == h.hexdigest()


# ---------------------------------------------------------------- 8. outputs and options (issue 8)

def test_existing_run_is_never_overwritten_silently(run_a, tmp_path):
    out = str(tmp_path / 'again')
    shutil.copytree(run_a[0], out)
    before = open(os.path.join(out, 'checkpoint.pt'), 'rb').read()
    proc = _run(['--out', out, *FAST, '--epochs', '1'])
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and 'holds an earlier run' in errors[0] and '--overwrite' in errors[0]
    assert open(os.path.join(out, 'checkpoint.pt'), 'rb').read() == before
    proc = _run(['--out', out, *FAST, '--epochs', '1', '--overwrite'])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line['epoch'] for line in _read_log(out)] == [1]


def test_two_runs_into_one_out_at_once_the_second_is_refused(tmp_path):
    """Two ``train_slayer.py`` runs into one ``--out`` at once both exited 0 and
    interleaved their logs (issue 18). A run holds ``flock`` on ``OUT/.lock`` (as
    the first run does, released by the kernel when it ends); a second is refused."""
    import fcntl
    out = tmp_path / 'shared'
    out.mkdir()
    with open(out / '.lock', 'a') as held:        # what a first run holds while it trains
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = _run(['--out', str(out), *FAST, '--epochs', '1'])
        assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
        errors = _error_lines(proc.stderr)
        assert len(errors) == 1 and 'in use by another training run' in errors[0] and str(out) in errors[0]
        assert not (out / 'log.jsonl').exists()
    proc = _run(['--out', str(out), *FAST, '--epochs', '1'])     # the first run ended: the lock is free
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_out_that_is_a_file_or_under_a_file(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    for out, words in ((blocker, 'is a file'), (blocker / 'sub', 'cannot write to --out')):
        proc = _run(['--out', str(out), *FAST, '--epochs', '1'])
        assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
        errors = _error_lines(proc.stderr)
        assert len(errors) == 1 and words in errors[0] and str(out) in errors[0]


def test_resume_trims_log_lines_newer_than_the_checkpoint_and_stale_temp_files(run_a, tmp_path):
    out = str(tmp_path / 'killed')
    shutil.copytree(run_a[0], out)
    ckpt = _load(os.path.join(out, 'checkpoint.pt'))
    # a kill after epoch 3's log line but before its checkpoint, and during a checkpoint write
    with open(os.path.join(out, 'log.jsonl'), 'a') as f:
        f.write(json.dumps({'epoch': ckpt['epoch'] + 1, 'train_loss': 1.0}) + '\n')
    open(os.path.join(out, '.checkpoint.pt.abc123'), 'wb').write(b'partial')
    proc = _run(['--out', out, *FAST, '--epochs', str(ckpt['epoch'] + 1), '--resume'])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line['epoch'] for line in _read_log(out)] == list(range(1, ckpt['epoch'] + 2))
    assert not [f for f in os.listdir(out) if f.startswith('.') and f != '.lock']   # .lock: the run lock, kept


def test_checkpoint_with_wrong_content_is_one_error_line(run_a, tmp_path):
    out = str(tmp_path / 'wrong')
    shutil.copytree(run_a[0], out)
    path = os.path.join(out, 'checkpoint.pt')
    ckpt = _load(path)
    ckpt['model'] = {k: v[:1] if v.dim() else v for k, v in ckpt['model'].items()}   # wrong shapes
    del ckpt['score_optimizer']
    torch.save(ckpt, path)
    proc = _run(['--out', out, *FAST, '--epochs', '3', '--resume'])
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and 'cannot resume from' in errors[0] and path in errors[0]


def test_resume_of_a_checkpoint_beyond_epochs_is_one_error_line(run_a, tmp_path):
    """``--resume`` of a checkpoint at epoch 2 with ``--epochs 1`` gave
    ``UnboundLocalError: local variable 'ev'`` (issue 18)."""
    out = str(tmp_path / 'beyond')
    shutil.copytree(run_a[0], out)
    before = open(os.path.join(out, 'checkpoint.pt'), 'rb').read()
    proc = _run(['--out', out, *FAST, '--epochs', '1', '--resume'])
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and 'epoch 2, beyond --epochs 1' in errors[0], proc.stderr[-2000:]
    assert open(os.path.join(out, 'checkpoint.pt'), 'rb').read() == before


@pytest.mark.parametrize('argv, words', [
    (['--threads', '-1'], '--threads'),
    (['--augment', '1000000'], '--augment'),
    (['--augment', '-3'], '--augment'),
    (['--t-max', '100000000'], '--t-max must be in 1..256'),
    (['--t-max', '4', '--fixed-t', '16'], '--fixed-t 16 sets T_max'),
    (['--mask-warmup', '5'], '--mask-warmup'),
    (['--freeze-scores', '-1'], '--freeze-scores'),
    (['--mask-warmup', '0.7', '--freeze-scores', '0.5'], 'never train'),
    (['--lr', 'nan'], '--lr'),
    (['--resume', '--overwrite'], 'exclude each other'),
    (['--init-steps', 'stem=2'], "unknown category 'stem'"),
    (['--init-steps', 'qkv=0'], 'whole numbers K >= 1'),
    (['--init-steps', '2.5'], 'whole numbers K >= 1'),
    (['--gates-from', 'x.pt', '--fixed-t', '2'], '--gates-from sets DTSS gates'),
    (['--gates-from', 'x.pt', '--init-steps', '2'], '--gates-from sets every gate'),
    (['--seed', '100000000000000000000'], '--seed must be in 0..4294967295'),
    (['--seed', '-5'], '--seed must be in 0..4294967295'),
])
def test_out_of_range_options_exit_2(script, capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        script.parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert words in err and 'error:' in err


def test_init_steps_per_category(script):
    """``--init-steps K`` sets every gate, ``CAT=K,...`` only the named categories."""
    assert script.parse_args(['--init-steps', '3']).init_steps == {'*': 3}
    assert script.parse_args(['--init-steps', 'qkv=2,mlp=1']).init_steps == {'qkv': 2, 'mlp': 1}
    assert script.parse_args([]).init_steps is None


def test_gates_from_sets_the_learned_gates_and_keeps_them(run_a, tmp_path):
    """Two-stage DTSS: ``--gates-from`` copies the active steps every gate learned
    in another run; with ``--freeze-scores 0 --lambda-m 0`` they stay fixed."""
    ckpt = os.path.join(run_a[0], 'checkpoint.pt')
    learned = learned_gate_steps(ckpt)
    assert learned and all(1 <= k <= 4 for k in learned.values())
    out = str(tmp_path / 'refit')
    _train(out, '--epochs', '1', '--init-from', ckpt, '--gates-from', ckpt, '--lambda-m', '0',
           '--mask-warmup', '0', '--freeze-scores', '0')
    assert learned_gate_steps(os.path.join(out, 'checkpoint.pt')) == learned
    with open(os.path.join(out, 'metrics.json')) as f:
        metrics = json.load(f)
    assert metrics['gates_from'] == ckpt


def test_gates_from_a_checkpoint_without_gates_is_one_error(tmp_path):
    path = tmp_path / 'fixed.pt'
    torch.save({'model': {'head.weight': torch.zeros(2)}, 'config': {}}, path)
    with pytest.raises(TrainingError, match='holds no DTSS gates'):
        learned_gate_steps(str(path))


@pytest.mark.parametrize('scores, words', [
    (torch.zeros(0), 'has shape (0,)'),
    (torch.tensor([0.1, float('nan')]), 'NaN or infinite'),
])
def test_gates_from_a_checkpoint_with_empty_or_nan_scores_is_one_error(tmp_path, scores, words):
    """Empty gate scores gave ``IndexError`` from ``argmax`` (issue 18); NaN
    scores were accepted. Both: one line naming the file and the gate."""
    path = tmp_path / 'bad_scores.pt'
    torch.save({'model': {'blocks.0.attn.q.gate.scores': scores}, 'config': {}}, path)
    with pytest.raises(TrainingError) as info:
        learned_gate_steps(str(path))
    msg = str(info.value)
    assert str(path) in msg and 'blocks.0.attn.q.gate.scores' in msg and words in msg and '\n' not in msg


def test_init_from_a_checkpoint_with_nan_weights_names_file_and_cause(run_a, tmp_path):
    """``--init-from`` a checkpoint with NaN weights: one line, but it said only
    ``cannot convert float NaN to integer`` (issue 18). Now it names the file,
    the weight and the cause."""
    ckpt = _load(os.path.join(run_a[0], 'checkpoint.pt'))
    key = next(k for k, v in ckpt['model'].items() if k.endswith('weight') and v.is_floating_point())
    ckpt['model'][key].fill_(float('nan'))
    path = str(tmp_path / 'nan.pt')
    torch.save(ckpt, path)
    proc = _run(['--out', str(tmp_path / 'out'), *FAST, '--epochs', '1', '--init-from', path])
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and path in errors[0] and key in errors[0] and 'NaN' in errors[0], errors


def test_torch_write_failure_of_a_checkpoint_is_an_os_error_naming_it(tmp_path, monkeypatch):
    """A full disk while a checkpoint is written (400 KB tmpfs) gave torch's
    ``RuntimeError: [enforce fail at inline_container.cc]`` traceback (issue 18):
    now an ``OSError`` naming the checkpoint, which train_slayer.py prints as one
    line; the previous checkpoint survives and no temporary file is left."""
    from lava_dtss.training import checkpoints
    path = str(tmp_path / 'checkpoint.pt')
    checkpoints.save_checkpoint(path, epoch=1)

    def failing_save(obj, f):
        f.write(b'partial')
        raise RuntimeError('[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0')
    monkeypatch.setattr(checkpoints.torch, 'save', failing_save)
    with pytest.raises(OSError) as info:
        checkpoints.save_checkpoint(path, epoch=2)
    assert info.value.filename == path and 'inline_container' in str(info.value)
    monkeypatch.undo()
    assert checkpoints.load_checkpoint(path)['epoch'] == 1
    assert os.listdir(tmp_path) == ['checkpoint.pt']


# Runs the script as __main__ with a full disk at one place: FULL_AT=save (the
# checkpoint write) or FULL_AT=card (after model.net, while its card is made).
FULL_DISK_WRAPPER = '''
import errno, os, runpy, sys
sys.path.insert(0, '.')
import torch
import lava_dtss.deploy.export as export
def full(*a, **k):
    raise OSError(errno.ENOSPC, 'No space left on device', 'checkpoint.pt')
if os.environ['FULL_AT'] == 'save':
    torch.save = full
else:
    export.deployed_model = full
sys.argv = ['scripts/train_slayer.py'] + sys.argv[1:]
runpy.run_path('scripts/train_slayer.py', run_name='__main__')
'''


@pytest.mark.parametrize('where', ['save', 'card'])
def test_full_disk_is_one_error_line_and_leaves_no_half_written_file(tmp_path, monkeypatch, where):
    monkeypatch.setenv('FULL_AT', where)
    out = str(tmp_path / 'full')
    args = ['--out', out, '--max-batches', '2', '--batch-size', '8', '--freeze-scores', '1', '--epochs', '1']
    proc = _run(args, prefix=['-c', FULL_DISK_WRAPPER])
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and 'No space left on device' in errors[0], proc.stderr[-2000:]
    files = os.listdir(out) if os.path.isdir(out) else []
    assert not [f for f in files if f.startswith('.') and f != '.lock'], files          # no temp file
    assert ('model.net' in files) == ('model.json' in files), files     # never a model without its card
    if where == 'save':
        assert 'checkpoint.pt' not in files


def test_config_overrides_a_preset_field_and_refuses_unknown_ones(tmp_path):
    """``--config FIELD=VALUE`` (the training levers of docs/training.md) reaches the
    model and its checkpoint; an unknown field or a bad value is one error line."""
    import lava_dtss
    from lava_dtss.training.loop import preset_overrides
    out = str(tmp_path / 'cfg')
    lava_dtss.train(out=out, epochs=1, max_batches=1, batch_size=8, no_export=True, freeze_scores=1,
                    preset_fields=['attn_threshold=2.0', 'voltage_decay=0.25'])
    ckpt = torch.load(os.path.join(out, 'checkpoint.pt'), weights_only=True)
    assert ckpt['config']['attn_threshold'] == 2.0 and ckpt['config']['voltage_decay'] == 0.25
    assert preset_overrides(['sps=[[8, 1], [32, 2]]']) == {'sps': [[8, 1], [32, 2]]}
    for bad, words in ((['name=x'], 'unknown or fixed field'), (['attn_threshold=-1'], 'finite number > 0'),
                       (['attn_threshold'], 'FIELD=VALUE'), (['embed_dim=1.5'], 'whole number'),
                       (['threshold=abc'], 'JSON')):
        with pytest.raises(ValueError, match=words):
            preset_overrides(bad)
    proc = subprocess.run([sys.executable, SCRIPT, '--config', 'bogus=1', '--out', str(tmp_path / 'x')],
                          capture_output=True, text=True, env=_env(), timeout=TIMEOUT)
    assert proc.returncode == 2 and "unknown or fixed field 'bogus'" in proc.stderr


def test_gates_from_the_metrics_of_a_dtss_run_equal_its_checkpoint(run_a, tmp_path):
    """``--gates-from`` a run's metrics.json (its active_steps per layer) gives the
    steps its checkpoint's gates chose: a study re-fits from committed results."""
    ckpt = os.path.join(run_a[0], 'checkpoint.pt')
    assert learned_gate_steps(os.path.join(run_a[0], 'metrics.json')) == learned_gate_steps(ckpt)
    bad = tmp_path / 'fixed.json'
    bad.write_text(json.dumps({'dtss': False, 'active_steps': {'sps.0': 4}}))
    with pytest.raises(TrainingError, match='a fixed-T run'):
        learned_gate_steps(str(bad))
    bad.write_text(json.dumps({'dtss': True, 't_max': 8, 'active_steps': {'sps.0': 4}}))
    with pytest.raises(TrainingError, match='T_max = 8'):
        learned_gate_steps(str(bad), 4)
    bad.write_text('{"accuracy": ')
    with pytest.raises(TrainingError, match='cannot read'):
        learned_gate_steps(str(bad))
