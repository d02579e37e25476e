"""Fuzz tests (property-based, ``hypothesis``, deterministic): random mutations
of the shipped model file through the reader and ``run_lava.py``, and random
argument vectors for the three CLIs. Every case must end within a time bound
with success or one clean error (one ``error:`` line from the scripts), never a
traceback, a hang, or a process or shared-memory segment left behind."""
import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import redirect_stderr

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lava_dtss.deploy import lava_runtime
from lava_dtss.deploy.netx_file import NetSpec, NetXFormatError, read_netx
from test_bad_input import SERIAL, _DRIVER, _env, _marked_pids, _shm_left, _shm_segments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, 'netx_models', 'digits_tiny_dtss.net')
SCRIPTS = {n: os.path.join(ROOT, 'scripts', n + '.py') for n in ('run_lava', 'train_slayer', 'export_netx')}
FUZZ = dict(derandomize=True, database=None, deadline=None, print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _keys(datasets_only=False):
    with h5py.File(SHIPPED, 'r') as f:
        found = []
        f.visititems(lambda name, obj: found.append(name)
                     if isinstance(obj, h5py.Dataset) or not datasets_only else None)
    return sorted(found)


KEYS = _keys()
# numeric datasets a user may plausibly edit: values change, shapes and types stay
TUNABLE = [k for k in _keys(datasets_only=True) if k.rsplit('/', 1)[-1] in (
    'weight', 'bias', 'vThMant', 'iDecay', 'vDecay', 'activeSteps', 'inputScale', 'heads', 't_max', 'dtss')]

# ---------------------------------------------------------------- file mutations
values = st.one_of(
    st.integers(-2**63, 2**63 - 1),
    st.sampled_from([0, -1, 1, 2**31, 2**62, 8.5, float('nan'), float('inf'), -0.0, True]),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.lists(st.integers(-300, 300), max_size=6),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=4),
)
mutation = st.one_of(
    st.tuples(st.just('replace'), st.sampled_from(KEYS), values),
    st.tuples(st.just('delete'), st.sampled_from(KEYS), st.none()),
    st.tuples(st.just('scale'), st.sampled_from(KEYS), st.sampled_from([0, -1, 2, 1000, -(2**40), 2**62])),
    st.tuples(st.just('reshape'), st.sampled_from(KEYS), st.sampled_from(['flat', 'extra_dim', 'scalar'])),
    st.tuples(st.just('link'), st.sampled_from(KEYS), st.sampled_from(['soft_loop', 'external', 'alias'])),
    st.tuples(st.just('fill'), st.sampled_from(TUNABLE), st.integers(-5, 5000)),
    st.tuples(st.just('truncate'), st.none(), st.floats(0.0, 0.999)),
    st.tuples(st.just('flip'), st.none(), st.lists(st.integers(0, 2**31), min_size=1, max_size=8)),
)


def _replace(f, key, value):
    del f[key]
    f[key] = value


def _apply(path, mutations):
    """Write ``mutations`` into the file at ``path`` (a copy of the shipped model)."""
    for op, key, arg in mutations:
        if op in ('truncate', 'flip'):
            with open(path, 'r+b') as raw:
                size = os.fstat(raw.fileno()).st_size
                if op == 'truncate':
                    raw.truncate(int(size * arg))
                else:
                    for pos in arg:
                        raw.seek(pos % max(size, 1))
                        byte = raw.read(1) or b'\0'
                        raw.seek(pos % max(size, 1))
                        raw.write(bytes([byte[0] ^ 0xFF]))
            continue
        try:
            f = h5py.File(path, 'r+')
        except OSError:           # an earlier truncation or flip broke the file
            return
        with f:
            try:
                _edit(f, op, key, arg)
            except (KeyError, RuntimeError, OSError, ValueError, TypeError):
                pass              # not applicable after an earlier mutation (deleted, a link loop)


def _edit(f, op, key, arg):
        if key not in f:      # deleted by an earlier mutation
            return
        obj = f[key]
        if op == 'delete':
            del f[key]
        elif op == 'replace':
            _replace(f, key, np.bytes_(arg) if isinstance(arg, bytes) else arg)
        elif op == 'link':
            del f[key]
            f[key] = {'soft_loop': h5py.SoftLink('/' + key),
                      'external': h5py.ExternalLink('/nonexistent.h5', '/x'),
                      'alias': h5py.SoftLink('/layer/1/weight')}[arg]
        elif isinstance(obj, h5py.Dataset) and obj.dtype.kind in 'biuf':
            v = obj[()]
            if op == 'fill':
                new = np.full(np.shape(v), arg, dtype=np.int64)
            elif op == 'scale':
                new = (np.asarray(v).astype(np.float64) * arg)
                new = new.astype(np.int64) if np.all(np.abs(new) < 2**62) else new
            else:
                new = {'flat': np.asarray(v).reshape(-1), 'extra_dim': np.asarray(v)[None],
                       'scalar': np.asarray(v).reshape(-1)[:1].reshape(())}[arg]
            _replace(f, key, new)


def _check_read(path):
    """The reader accepts the file or raises one clean NetXFormatError."""
    try:
        spec = read_netx(path)
    except NetXFormatError as e:
        msg = str(e)
        assert msg.startswith(path + ':') and '\n' not in msg, msg
        return None
    assert isinstance(spec, NetSpec)
    t_max = spec.t_max or 4
    mem = lava_runtime.estimate_memory(spec, 2, t_max, reference='config' in spec.meta)
    assert mem['total'] > 0
    return spec


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp('fuzz')


def test_fuzz_reader_on_mutated_model_files(folder):
    @settings(max_examples=40, **FUZZ)
    @given(st.lists(mutation, min_size=1, max_size=3))
    def case(mutations):
        path = str(folder / 'mutated.net')
        shutil.copy(SHIPPED, path)
        _apply(path, mutations)
        t0 = time.monotonic()
        _check_read(path)
        assert time.monotonic() - t0 < 10
    case()


def _run_driver(script, cases, timeout):
    """Run ``script`` as __main__ once per argument list in one interpreter (the
    batch driver of test_bad_input), marked; returns results, pids and shm left."""
    marker = uuid.uuid4().hex
    shm_before = _shm_segments()
    env = dict(_env(), LAVA_DTSS_TEST_MARKER=marker)
    proc = subprocess.Popen([sys.executable, '-c', _DRIVER, script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True)
    try:
        out, err = proc.communicate(json.dumps(cases), timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        pytest.fail(f'the batch did not end within {timeout} s (a hang): {out[-2000:]} {err[-2000:]}')
    finally:
        time.sleep(0.5)
        left = _marked_pids(marker)
        for pid in left:                  # only processes this test started
            os.kill(pid, 9)
    assert proc.returncode == 0 and '\nRESULTS ' in out, err[-3000:]
    return json.loads(out.rsplit('\nRESULTS ', 1)[1]), left, _shm_left(shm_before)


def _clean(name, result):
    """Exit 0, or a non-zero exit with exactly one ``error:`` line; never a traceback."""
    code, out, err = result
    assert 'Traceback' not in err, (name, err[-3000:])
    errors = [line for line in err.splitlines() if line.startswith('error:') or ': error: ' in line]
    if code == 0:
        assert not errors, (name, err[-2000:])
    else:
        assert len(errors) == 1, (name, code, err[-2000:])


@SERIAL
def test_fuzz_run_lava_on_mutated_model_files(folder):
    """A few mutated files through the real ``run_lava.py --num-samples 2`` (Lava
    runs where the reader accepts them), in one interpreter under a time bound."""
    cases = {}

    def add(mutations):
        path = str(folder / f'run{len(cases)}.net')
        shutil.copy(SHIPPED, path)
        _apply(path, mutations)
        cases[os.path.basename(path)] = ['--model', path, '--num-samples', '2', '--gated-only']

    # values that keep the file readable, so most of these reach Lava
    settings(max_examples=6, **FUZZ)(given(st.lists(
        st.tuples(st.just('fill'), st.sampled_from(TUNABLE), st.integers(-5, 300)), min_size=1, max_size=2))(add))()
    settings(max_examples=3, **FUZZ)(given(st.lists(mutation, min_size=1, max_size=2))(add))()
    cases['shipped'] = ['--num-samples', '2', '--gated-only']
    results, left, shm = _run_driver(SCRIPTS['run_lava'], cases, timeout=240)
    for name, result in results.items():
        _clean(name, result)
    assert results['shipped'][0] == 0
    ran = [n for n, r in results.items() if 'running' in r[1]]
    assert len(ran) >= 4, f'only {ran} reached Lava: the mutations no longer exercise the runtime'
    assert left == [] and not shm, (left, shm)


# ---------------------------------------------------------------- argument vectors
def _script(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'{name}_fuzzed', SCRIPTS[name])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


arg_values = st.one_of(
    st.integers(-2**70, 2**70).map(str),
    st.sampled_from(['0', '-1', '1', 'nan', 'inf', '-inf', '1e400', '0.5', '', ' ', '--', 'x=1',
                     'qkv=0', 'mlp=2,attn=1', '/', '/proc/1/mem', '/nonexistent/dir/f', 'runs']),
    st.text(min_size=0, max_size=8),
)
OPTIONS = {
    'run_lava': ['--model', '--dataset', '--data-dir', '--num-samples', '--batch', '--t-max', '--json',
                 '--backend', '--build', '--max-memory-gb', '--no-gating', '--gated-only', '--check-loihi'],
    'train_slayer': ['--dataset', '--preset', '--t-max', '--fixed-t', '--ann', '--lambda-m', '--mask-categories',
                     '--epochs', '--batch-size', '--lr', '--lr-schedule', '--score-lr', '--mask-warmup',
                     '--freeze-scores', '--init-steps', '--val-size', '--batches-per-epoch', '--bn-calibration',
                     '--weight-decay', '--augment', '--seed', '--threads', '--resume', '--overwrite',
                     '--max-batches'],
}
FLAGS = {'--no-gating', '--gated-only', '--check-loihi', '--ann', '--resume', '--overwrite'}


def _argv(options):
    return st.lists(st.tuples(st.sampled_from(options), arg_values), max_size=5).map(
        lambda pairs: [x for o, v in pairs for x in ((o,) if o in FLAGS else (o, v))])


@pytest.mark.parametrize('name', ['run_lava', 'train_slayer'])
def test_fuzz_cli_argument_vectors_parse_cleanly(name):
    """``parse_args`` accepts an argument vector, or rejects it as the script's
    ``__main__`` reports it: argparse's exit 2 with its ``error:`` line, or a
    one-line ``ValueError`` (printed as ``error: ...``)."""
    mod = _script(name)

    @settings(max_examples=40, **FUZZ)
    @given(_argv(OPTIONS[name]))
    def case(argv):
        err = io.StringIO()
        t0 = time.monotonic()
        try:
            with redirect_stderr(err):
                mod.parse_args(argv)
        except SystemExit as e:
            assert e.code == 2 and 'error: ' in err.getvalue(), (argv, e.code, err.getvalue())
        except ValueError as e:
            assert name == 'run_lava' and str(e) and '\n' not in str(e), (argv, e)
        assert time.monotonic() - t0 < 5
    case()


def test_fuzz_export_netx_and_train_slayer_full_runs(folder):
    """Real runs of ``export_netx.py`` on fuzzed checkpoints and output paths, and of
    ``train_slayer.py`` on fuzzed option values that fail before training, each in
    one interpreter: success or one ``error:`` line, never a traceback."""
    import torch
    (folder / 'a_file').write_text('x')
    checkpoints = {
        'missing': str(folder / 'nope.pt'), 'folder': str(folder), 'text': str(folder / 'a_file'),
    }
    contents = st.one_of(st.none(), st.integers(), st.text(max_size=5),
                         st.dictionaries(st.sampled_from(['config', 'model', 'args', 'dtss']),
                                         st.one_of(st.none(), st.integers(), st.text(max_size=3),
                                                   st.dictionaries(st.text(max_size=3), st.integers(),
                                                                   max_size=2)),
                                         max_size=4))
    export_cases, train_cases = {}, {}

    @settings(max_examples=12, **FUZZ)
    @given(contents, st.sampled_from(['m.net', 'a_file/m.net', 'nope/m.net', '']))
    def collect(content, out):
        i = len(export_cases)
        path = str(folder / f'ckpt{i}.pt')
        torch.save(content, path)
        ckpt = [path] if i % 4 else [list(checkpoints.values())[i // 4 % 3]]
        export_cases[f'export{i}'] = ckpt + ['--out', str(folder / out) if out else '']
    collect()

    @settings(max_examples=8, **FUZZ)
    @given(st.sampled_from(['--seed', '--val-size', '--init-from', '--data-dir', '--bn-calibration']),
           arg_values)
    def collect_train(option, value):
        train_cases[f'train{len(train_cases)}'] = [option, value, '--out', str(folder / 'a_file'),
                                                   '--epochs', '1', '--max-batches', '1']
    collect_train()
    for script, cases in (('export_netx', export_cases), ('train_slayer', train_cases)):
        results, left, _ = _run_driver(SCRIPTS[script], cases, timeout=240)
        for name, result in results.items():
            _clean(name, result)
        assert left == []
