"""Bad input gives one clear error, never a traceback or a silent skip.

Library: ``read_netx`` raises ``NetXFormatError`` naming the file, the layer
and the key. CLI (``scripts/run_lava.py``): non-zero exit, one ``error:`` line
on stderr naming the problem, no traceback. Ctrl-C stops Lava cleanly and
leaves no process behind.
"""
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import h5py
import numpy as np
import pytest
import torch

import lava_dtss.model
from lava_dtss.deploy.export import export_hdf5
from lava_dtss.deploy.netx_file import LAYER_TYPES, LayerSpec, NetSpec, NetXFormatError, read_netx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# checks shared-memory segments machine-wide (new psm_ files): run alone, not beside other
# tests (make test runs these after the parallel pass)
SERIAL = pytest.mark.serial
RUN_LAVA = os.path.join(ROOT, 'scripts', 'run_lava.py')
FASHION_DIR = '/usr/share/datasets/fashion-mnist'
SHIPPED = os.path.join(ROOT, 'netx_models', 'digits_tiny_dtss.net')


# ---------------------------------------------------------------- bad files
# Layers of the tiny model: 0 input, 1 sps.0 (conv), 2 sps.1 (conv), 3 rpe
# (conv), 4-6 q/k/v, 7 attention, 8 proj, 9 fc1, 10 fc2, 11 readout.

def _replace(f, key, value):
    del f[key]
    f[key] = value


def _missing_key(f):
    del f['layer/1/weight']


def _wrong_weight_shape(f):           # 16 -> 19 output channels
    w = f['layer/1/weight'][()]
    _replace(f, 'layer/1/weight', np.concatenate([w, w[:3]]))


def _float_weight(f):
    _replace(f, 'layer/1/weight', f['layer/1/weight'][()] + 0.5)


def _string_weight(f):
    w = f['layer/1/weight'][()]
    _replace(f, 'layer/1/weight',
             np.array([str(v).encode() for v in w.reshape(-1)]).reshape(w.shape))


def _unknown_type(f):
    f['layer/2/type'][0] = b'pool'


def _later_input(f):
    f['layer/3/dtss/inputs'][0] = 5


def _active_steps_zero(f):
    f['layer/3/dtss/activeSteps'][()] = 0


def _active_steps_too_many(f):
    f['layer/3/dtss/activeSteps'][()] = 9      # T_max of 'tiny' is 8


def _no_layer_group(f):
    del f['layer']


def _huge_threshold(f):
    f['layer/3/neuron/vThMant'][()] = 300000   # > 17 bits: a Loihi 2 violation only


def _heads(value):
    def mutate(f):
        f['layer/7/heads'][()] = value
    return mutate


def _stride_zero(f):
    _replace(f, 'layer/2/stride', np.array([0, 0]))


def _scalar_layer(f):
    del f['layer/5']
    f['layer/5'] = 3


def _dangling_link(f):
    del f['layer/1/weight']
    f['layer/1/weight'] = h5py.ExternalLink('/nonexistent/file.h5', '/w')


def _link_loop(f):
    del f['layer/1/bias']
    f['layer/1/bias'] = h5py.SoftLink('/layer/1/bias')


def _meta(key, value):
    def mutate(f):
        del f[f'meta/{key}']
        f[f'meta/{key}'] = value
    return mutate


def _meta_dataset(f):
    del f['meta']
    f['meta'] = np.arange(3)


def _config_extra_key(f):
    cfg = json.loads(f['meta/config'][()])
    cfg['surprise'] = 1
    _replace(f, 'meta/config', json.dumps(cfg))


def _uint64_weight(f):
    w = f['layer/1/weight'][()]
    _replace(f, 'layer/1/weight', (w.astype(np.int64) % 7).astype(np.uint64) + np.uint64(2 ** 63 + 5))


def _big_weight(f):
    w = f['layer/1/weight'][()]
    w.reshape(-1)[0] = 1000
    _replace(f, 'layer/1/weight', w)


def _odd_big_bias(f):                 # beyond 13 bits only at bias_exp 7, which takes even biases only
    b = f['layer/1/bias'][()]
    b[0] = 5001
    _replace(f, 'layer/1/bias', b)


def _big_bias(f):                     # 13-bit bias mantissa at bias_exp <= 7 of Loihi 2: beyond, the state can overflow
    b = f['layer/1/bias'][()]
    b[0] = 9000
    _replace(f, 'layer/1/bias', b)


def _duplicate_name(f):                # issue 18: KeyError 'blocks.0.ssa.k' after the reader
    f['layer/5/dtss/name'][()] = f['layer/4/dtss/name'][()]


def _nonascii_type(f):
    _replace(f, 'layer/2/type', np.array(['pööl'.encode('utf-8')]))


MUTATIONS = {
    'heads_0': _heads(0),
    'heads_-2': _heads(-2),
    'stride_0': _stride_zero,
    'scalar_layer': _scalar_layer,
    'dangling_link': _dangling_link,
    'link_loop': _link_loop,
    't_max_array': _meta('t_max', np.array([8, 8])),
    't_max_8.5': _meta('t_max', 8.5),
    't_max_abc': _meta('t_max', 'abc'),
    'meta_dataset': _meta_dataset,
    'config_extra_key': _config_extra_key,
    'config_int': _meta('config', '5'),
    'config_list': _meta('config', '[1, 2]'),
    'config_malformed': _meta('config', '{"name": '),
    'dtss_no': _meta('dtss', 'no'),
    'uint64_weight': _uint64_weight,
    'big_weight': _big_weight,
    'big_bias': _big_bias,
    'odd_big_bias': _odd_big_bias,
    'nonascii_type': _nonascii_type,
    'duplicate_name': _duplicate_name,
    'missing_key': _missing_key,
    'weight_shape': _wrong_weight_shape,
    'float_weight': _float_weight,
    'string_weight': _string_weight,
    'unknown_type': _unknown_type,
    'later_input': _later_input,
    'active_steps_0': _active_steps_zero,
    'active_steps_9': _active_steps_too_many,
    'no_layer_group': _no_layer_group,
    'huge_threshold': _huge_threshold,
}

# bad file -> (layer index or None, words the message must contain)
EXPECTED = {
    'missing': (None, ['no such file']),
    'text': (None, ['not an HDF5 file']),
    'no_layer_group': (None, ['missing group', '"layer"']),
    'missing_key': (1, ['missing key', "'weight'"]),
    'weight_shape': (1, ['weight', '19 output channels', '(16, 8, 8)']),
    'float_weight': (1, ["'weight'", 'non-integer floats']),
    'string_weight': (1, ["'weight'", 'strings', 'expected numbers']),
    'unknown_type': (2, ["'pool'", 'layer type'] + list(LAYER_TYPES)),
    'later_input': (3, ['dtss/inputs', '[5]', 'earlier layers (0..2)']),
    'active_steps_0': (3, ['dtss/activeSteps = 0', 'out of range 1..8']),
    'active_steps_9': (3, ['dtss/activeSteps = 9', 'out of range 1..8']),
    'heads_0': (7, ['heads = 0', 'must be >= 1']),
    'heads_-2': (7, ['heads = -2', 'must be >= 1']),
    'stride_0': (2, ['stride [0, 0]', 'must be >= 1']),
    'scalar_layer': (None, ['layer/5 should be a group']),
    'dangling_link': (1, ["'weight'"]),
    'link_loop': (None, []),
    't_max_array': (None, ['meta/t_max', 'whole number']),
    't_max_8.5': (None, ['meta/t_max = 8.5', 'whole number']),
    't_max_abc': (None, ["meta/t_max = 'abc'"]),
    'meta_dataset': (None, ['meta should be a group']),
    'config_extra_key': (None, ['meta/config', 'surprise']),
    'config_int': (None, ['meta/config', 'not an object']),
    'config_list': (None, ['meta/config', 'not an object']),
    'config_malformed': (None, ['meta/config', 'lava_dtss model configuration']),
    'dtss_no': (None, ["meta/dtss = 'no'", 'expected 0 or 1']),
    'uint64_weight': (1, ["'weight'", 'unsigned values beyond the int64 range']),
    'big_weight': (1, ['weight values', '1000', 'exceed the range -128..127']),
    'big_bias': (1, ['bias values', '9000', 'exceed the range -8192..8190']),
    'odd_big_bias': (1, ['bias values', '5001', 'must all be even', 'bias_exp 7']),
    'nonascii_type': (2, ['pööl', 'layer type']),
    'duplicate_name': (5, ['dtss/name', 'also the name of layer 4']),
}


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp('bad_input')
    good = str(folder / 'good.net')
    torch.manual_seed(0)
    model = lava_dtss.model.build_model('tiny')
    model.eval()
    export_hdf5(model, good, dataset='digits')
    paths = {'good': good, 'missing': str(folder / 'does_not_exist.net'),
             'text': str(folder / 'text.net')}
    with open(paths['text'], 'w') as f:
        f.write('this is a text file, not HDF5\n')
    for name, mutate in MUTATIONS.items():
        path = str(folder / f'{name}.net')
        shutil.copy(good, path)
        with h5py.File(path, 'r+') as f:
            mutate(f)
        paths[name] = path
    # the untrained model's layer 1 (weights up to 127, inputs up to 255) may wrap the 24-bit current in
    # the worst case, a --check-loihi violation: the Loihi check cases start from the trained shipped model
    paths['shipped'] = SHIPPED
    paths['shipped_huge_threshold'] = str(folder / 'shipped_huge_threshold.net')
    shutil.copy(SHIPPED, paths['shipped_huge_threshold'])
    with h5py.File(paths['shipped_huge_threshold'], 'r+') as f:
        _huge_threshold(f)
    return paths


# ---------------------------------------------------------------- library
def test_good_file_reads(files):
    spec = read_netx(files['good'])
    assert spec.t_max == 8 and spec.layers[1].type == 'conv' and spec.layers[2].type == 'conv'
    assert spec.layers[3].active_steps is not None and spec.layers[3].inputs == [2]


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_library_error_names_file_layer_and_key(files, name):
    index, words = EXPECTED[name]
    with pytest.raises(NetXFormatError) as info:
        read_netx(files[name])
    msg = str(info.value)
    assert msg.startswith(files[name] + ':'), msg
    if index is not None:
        assert f'layer {index} (' in msg, msg
    for word in words:
        assert word in msg, (word, msg)
    assert '\n' not in msg


def test_huge_threshold_is_readable_but_fails_the_loihi_check(files):
    from lava_dtss.deploy.loihi_check import check_network
    for name in ('huge_threshold', 'shipped_huge_threshold'):
        spec = read_netx(files[name])
        assert spec.layers[3].neuron['vThMant'] == 300000
        bad = {c.name: c.violations for c in check_network(spec) if c.violations}
        assert 'vThMant 300000' in bad['rpe'][0]
    assert list(bad) == ['rpe']   # the trained model: no other violation


def test_unknown_layer_type_is_never_skipped_by_the_runtime():
    """A spec built in code (bypassing read_netx) with an unknown type fails
    in ``build`` instead of being dropped."""
    from lava_dtss.deploy import lava_runtime
    spec = NetSpec(layers=[LayerSpec(type='input', name='input', shape=(1, 4, 4),
                                     params={'inputScale': 1}),
                           LayerSpec(type='pool', name='p', shape=(1, 2, 2), inputs=[0])],
                   meta={'t_max': 2})
    with pytest.raises(ValueError, match=r"layer 1 \('p'\): unknown layer type 'pool'; supported: input"):
        lava_runtime.build(spec, np.zeros((1, 1, 4, 4, 2)))


# ---------------------------------------------------------------- CLI
class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def _cli_cases(files):
    g = files['good']
    cases = {name: ['--model', files[name]] for name in EXPECTED}
    cases.update({
        'num_samples_0': ['--model', g, '--num-samples', '0'],
        'num_samples_100000': ['--model', g, '--num-samples', '100000'],
        'fashion_with_digits_model': ['--model', g, '--dataset', 'fashion-mnist'],
        'loihi2_backend': ['--model', g, '--backend', 'loihi2', '--num-samples', '2'],
        'check_loihi_good': ['--model', files['shipped'], '--check-loihi'],
        'check_loihi_bad': ['--model', files['shipped_huge_threshold'], '--check-loihi'],
        't_max_0': ['--model', g, '--t-max', '0'],
        'batch_0': ['--model', g, '--batch', '0'],
        'batch_negative': ['--model', g, '--batch', '-3'],
        'json_folder': ['--model', g, '--json', os.path.dirname(g)],
        'json_no_folder': ['--model', g, '--json', os.path.join(os.path.dirname(g), 'nope', 'r.json')],
        'json_proc': ['--model', g, '--json', '/proc/x.json'],     # issue 18: a traceback after the run
    })
    return cases


def _env():
    return dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')


def _run_cli(args):
    """One real ``python scripts/run_lava.py ARGS``."""
    res = subprocess.run([sys.executable, RUN_LAVA, *args], capture_output=True, text=True,
                         env=_env(), timeout=120, cwd=ROOT)
    return Result(res.returncode, res.stdout, res.stderr)


# Runs scripts/run_lava.py as __main__ (its own error handling included) once
# per argument list in ONE interpreter, so the ~3 s of imports are paid once.
# An exception escaping the script is printed as the interpreter would
# (Traceback, exit 1).
_DRIVER = r"""
import contextlib, io, json, runpy, sys, traceback
script, cases = sys.argv[1], json.load(sys.stdin)
results = {}
for name, args in cases.items():
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [script] + args
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name='__main__')
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    results[name] = [code, out.getvalue(), err.getvalue()]
sys.__stdout__.write('\nRESULTS ' + json.dumps(results) + '\n')
"""


def _run_cli_batch(cases):
    res = subprocess.run([sys.executable, '-c', _DRIVER, RUN_LAVA], input=json.dumps(cases),
                         capture_output=True, text=True, env=_env(), timeout=300, cwd=ROOT)
    assert res.returncode == 0 and '\nRESULTS ' in res.stdout, res.stderr[-3000:]
    results = json.loads(res.stdout.rsplit('\nRESULTS ', 1)[1])
    return {name: Result(*r) for name, r in results.items()}


# End-to-end in their own process; the rest go through the batch driver.
REAL_PROCESS = ('missing', 'unknown_type', 'loihi2_backend', 'check_loihi_bad')


@pytest.fixture(scope='module')
def cli(files):
    cases = _cli_cases(files)
    batch = {k: v for k, v in cases.items() if k not in REAL_PROCESS}
    batch['missing/driver'] = cases['missing']        # the driver must match a real run
    with ThreadPoolExecutor(max_workers=2) as pool:
        batched = pool.submit(_run_cli_batch, batch)
        real = {name: pool.submit(_run_cli, cases[name]) for name in REAL_PROCESS}
        results = {name: fut.result() for name, fut in real.items()}
        results.update(batched.result())
    assert set(results) == set(cases) | {'missing/driver'}
    return results


def _one_error(res):
    """The single ``error:`` line of a failed run (checks exit and no traceback)."""
    assert res.returncode != 0, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert 'Traceback' not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1, res.stderr
    return errors[0]


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_cli_bad_file(cli, files, name):
    line = _one_error(cli[name])
    assert files[name] in line
    index, words = EXPECTED[name]
    if index is not None:
        assert f'layer {index} (' in line
    for word in words:
        assert word in line, (word, line)
    assert 'running' not in cli[name].stdout       # stopped before Lava


def test_batch_driver_matches_a_real_process(cli):
    real, driven = cli['missing'], cli['missing/driver']
    assert real.returncode == driven.returncode == 2
    assert _one_error(real) == _one_error(driven)


@pytest.mark.parametrize('name', ['num_samples_0', 'num_samples_100000'])
def test_cli_num_samples_out_of_range(cli, name):
    line = _one_error(cli[name])
    n = name.rsplit('_', 1)[1]
    assert '--num-samples' in line and 'must be in 1..360' in line and f'got {n}' in line, line


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason='Fashion-MNIST not installed')
def test_cli_input_shape_mismatch(cli, files):
    line = _one_error(cli['fashion_with_digits_model'])
    assert '(1, 28, 28)' in line and 'expects input (1, 8, 8)' in line, line
    assert files['good'] in line


def test_cli_loihi2_without_lava_loihi(cli):
    from lava.utils import loihi
    if loihi.is_installed():
        pytest.skip('lava-loihi is installed here')
    line = _one_error(cli['loihi2_backend'])
    assert 'lava-loihi' in line and 'INRC' in line and '--backend cpu' in line, line


def test_cli_check_loihi_good_file(cli):
    res = cli['check_loihi_good']
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'estimated cores' in res.stdout
    assert 'Traceback' not in res.stderr and 'error:' not in res.stderr


def test_cli_check_loihi_violation(cli):
    res = cli['check_loihi_bad']
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    line = _one_error(res)
    assert line.startswith('error: layer rpe:') and 'vThMant 300000' in line, line
    assert 'estimated cores' in res.stdout


# ---------------------------------------------------------------- Ctrl-C
def _marked_pids(marker):
    needle = f'LAVA_DTSS_TEST_MARKER={marker}'.encode()
    pids = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/environ', 'rb') as f:
                if needle in f.read():
                    pids.append(int(entry))
        except OSError:    # gone, or not ours
            pass
    return pids


def test_ctrl_c_stops_lava_cleanly(files):
    marker = uuid.uuid4().hex
    env = dict(os.environ, OMP_NUM_THREADS='1', LAVA_DTSS_TEST_MARKER=marker)
    # the shipped model: the untrained test file wraps sps.0's 24-bit current in Lava, so a run
    # that missed the signal would end in "Lava differs" instead of a clear failure here
    proc = subprocess.Popen([sys.executable, RUN_LAVA, '--model', os.path.join(ROOT, 'netx_models', 'digits_tiny_dtss.net'),
                             '--num-samples', '300'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines, err = queue.Queue(), []
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)],
                     daemon=True).start()
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    try:
        deadline, out = time.monotonic() + 150, []
        while not any('running' in x for x in out):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f'exited early: {"".join(out)}'
            out.append(line)
        time.sleep(4)                          # Lava's runtime processes are up
        assert proc.poll() is None, 'finished before Ctrl-C: the test needs a longer run'
        assert len(_marked_pids(marker)) > 1, 'Lava started no child processes'
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        reader.join(timeout=10)
        stderr = err[0] if err else ''
        # 130 = 128 + SIGINT, the shell convention; run_lava.py returns it
        # after KeyboardInterrupt once Lava is stopped.
        assert code == 130, (code, stderr[-3000:])
        assert 'Traceback' not in stderr, stderr
        assert 'interrupted' in stderr
        deadline = time.monotonic() + 10
        while _marked_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _marked_pids(marker) == [], 'Lava processes survived Ctrl-C'
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _marked_pids(marker):       # only processes this test started
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _start_lava_run(args, marker):
    """``run_lava.py ARGS`` in a session of its own, its processes marked with ``marker``."""
    env = dict(os.environ, OMP_NUM_THREADS='1', LAVA_DTSS_TEST_MARKER=marker)
    return subprocess.Popen([sys.executable, RUN_LAVA, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True)


def _wait_for_lava_processes(proc, marker, timeout_s):
    """Wait (at most ``timeout_s``) until Lava's processes of ``proc`` are up, then 2 s more."""
    deadline = time.monotonic() + timeout_s
    while len(_marked_pids(marker)) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    assert proc.poll() is None, 'finished before the stop signal: the test needs a longer run'
    assert len(_marked_pids(marker)) > 3, 'Lava started no child processes'


def _ctrl_c_to_the_group(args):
    """Run ``run_lava.py ARGS`` in its own process group, SIGINT the group once
    Lava's processes are up, and check: exit 130 within seconds, no traceback,
    no process and no new shared-memory segment left."""
    marker = uuid.uuid4().hex
    shm_before = set(os.listdir('/dev/shm'))
    proc = _start_lava_run(args, marker)
    try:
        _wait_for_lava_processes(proc, marker, 90)
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 20
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, stderr[-3000:]
    assert 'Traceback' not in stderr and 'KeyboardInterrupt' not in stderr, stderr[-3000:]
    time.sleep(1)
    assert _marked_pids(marker) == []
    assert not _shm_left(shm_before)


@SERIAL
def test_ctrl_c_to_the_process_group_ends_the_run_cleanly(files):
    """What a terminal does: SIGINT to the whole process group (Lava's children
    included). One Ctrl-C must end the run with exit 130 within seconds, no
    traceback, no process and no shared-memory segment left behind."""
    _ctrl_c_to_the_group(['--model', files['good'], '--num-samples', '300'])


@SERIAL
def test_ctrl_c_to_the_process_group_ends_a_loihi_build_run_cleanly():
    """The same for ``--build loihi`` (standard Lava processes per layer and
    synapse, relays, timer and gates) on the shipped model (the untrained test
    file cannot be gated without wrapping the 24-bit current)."""
    _ctrl_c_to_the_group(['--model', os.path.join(ROOT, 'netx_models', 'digits_tiny_dtss.net'),
                          '--build', 'loihi', '--num-samples', '300'])


@pytest.mark.parametrize('name, words', [
    ('t_max_0', ['--t-max must be in 1..', 'got 0']),
    ('batch_0', ['--batch must be at least 1', 'got 0']),
    ('batch_negative', ['--batch must be at least 1', 'got -3']),
    ('json_folder', ['--json', 'is a folder']),
    ('json_no_folder', ['--json', 'does not exist']),
    ('json_proc', ['--json /proc/x.json', 'cannot be written']),
])
def test_cli_bad_options_fail_before_any_run(cli, name, words):
    res = cli[name]
    assert res.returncode == 2 and 'running' not in res.stdout
    line = _one_error(res)
    for w in words:
        assert w in line, line


# ---------------------------------------------------------------- sizes, hangs (issue 8)
def _shm_segments():
    return {s for s in os.listdir('/dev/shm') if s.startswith('psm_')}


def _shm_left(before, bound_s=30.0):
    """Lava shared-memory segments made since ``before`` that are still there after up to
    ``bound_s`` seconds: their unlinking can lag the end of the processes that made them
    (seen in full-suite runs: 6 segments gone some seconds later), a leak stays."""
    deadline = time.monotonic() + bound_s
    while True:
        new = _shm_segments() - before
        if not new or time.monotonic() > deadline:
            return new
        time.sleep(0.5)


def _run_marked(args, timeout, prefix=(RUN_LAVA,), env_extra=None):
    """``python PREFIX ARGS`` in its own session, marked so that every process it
    starts can be found; returns (Result, seconds, pids left, shm segments left)."""
    marker = uuid.uuid4().hex
    env = dict(_env(), LAVA_DTSS_TEST_MARKER=marker, **(env_extra or {}))
    shm_before = _shm_segments()
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, *prefix, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        for pid in _marked_pids(marker):
            os.kill(pid, signal.SIGKILL)
        pytest.fail(f'no exit within {timeout} s (a hang): {args}\n{err[-3000:]}')
    seconds = time.monotonic() - t0
    deadline = time.monotonic() + 5
    while _marked_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _marked_pids(marker)
    for pid in left:                      # only processes this test started
        os.kill(pid, signal.SIGKILL)
    return Result(proc.returncode, out, err), seconds, left, _shm_left(shm_before)


def _neuron(g):
    g['neuron/type'] = np.array([b'CUBA'])
    for k, v in (('iDecay', 4096), ('vDecay', 4096), ('vThMant', 1)):
        g[f'neuron/{k}'] = v


def _million_channels(path, spatial=8):
    """A stock-style file of a few KB that declares a consistent conv of 10**6
    channels (the weight is compressed zeros)."""
    c = 10 ** 6
    with h5py.File(path, 'w') as f:
        f['layer/0/type'] = np.array([b'input'])
        f['layer/0/shape'] = np.array([1, spatial, spatial])
        f['layer/1/type'] = np.array([b'conv'])
        f['layer/1/shape'] = np.array([c, spatial, spatial])
        f.create_dataset('layer/1/weight', data=np.zeros((c, 1, 1, 1), np.int8), compression='gzip',
                         chunks=(1 << 16, 1, 1, 1))
        _neuron(f['layer/1'])
    return path


@SERIAL
def test_declared_sizes_beyond_the_memory_limit_are_refused_before_lava(tmp_path):
    path = _million_channels(str(tmp_path / 'million.net'))
    assert os.path.getsize(path) < 100_000
    res, seconds, left, shm = _run_marked(['--model', path, '--t-max', '4', '--num-samples', '2'], 120)
    line = _one_error(res)
    assert res.returncode == 2 and 'running' not in res.stdout
    assert path in line and 'needs an estimated' in line and 'beyond the limit of' in line, line
    assert '--max-memory-gb' in line, line
    assert seconds < 60 and left == [] and not shm


@SERIAL
def test_huge_t_max_is_refused_by_the_memory_estimate(files, tmp_path):
    """``meta/t_max`` at the reader's bound: the training-side check alone would
    need tens of GiB; refused in one line before any Lava process (by the
    reader since issue 18: it differs from ``meta/config``'s t_max; the memory
    estimate refuses such a run as well)."""
    from lava_dtss.deploy import lava_runtime
    from lava_dtss.deploy.netx_file import MAX_T
    path = str(tmp_path / 'long.net')
    shutil.copy(files['good'], path)
    with h5py.File(path, 'r+') as f:
        f['meta/t_max'][()] = MAX_T
    res, seconds, left, shm = _run_marked(['--model', path, '--num-samples', '2', '--max-memory-gb', '4'], 120)
    line = _one_error(res)
    assert path in line and f'meta/t_max = {MAX_T} but meta/config has t_max' in line, line
    assert 'running' not in res.stdout and seconds < 60 and left == [] and not shm
    with pytest.raises(lava_runtime.MemoryLimitError, match=f'2 samples x {MAX_T} steps.*limit of 4 GiB'):
        lava_runtime.check_memory(read_netx(files['good']), 2, MAX_T, limit=4 << 30, reference=True)


def test_memory_limit_is_a_flag_and_checked_by_the_library(files, tmp_path):
    from lava_dtss.deploy import lava_runtime
    spec = read_netx(files['good'])
    mem = lava_runtime.check_memory(spec, 2, 8)
    assert 0 < mem['total'] < 2**30 and mem['weights'] > 0
    with pytest.raises(lava_runtime.MemoryLimitError, match=r'^the network: a run of 2 samples x 8 steps'):
        lava_runtime.check_memory(spec, 2, 8, limit=1000)
    with pytest.raises(lava_runtime.MemoryLimitError):     # run() checks before building anything
        lava_runtime.run(spec, np.zeros((2, 1, 8, 8)), max_memory=1000)
    assert lava_runtime.default_memory_limit() == int(0.5 * lava_runtime.physical_memory())
    res = _run_cli(['--model', files['good'], '--num-samples', '2', '--max-memory-gb', '0.0001'])
    line = _one_error(res)
    assert 'beyond the limit of 0.0001 GiB' in line and 'running' not in res.stdout, line
    res = _run_cli(['--model', files['good'], '--max-memory-gb', '-1'])
    assert '--max-memory-gb must be a positive number' in _one_error(res)


def test_reader_refuses_a_huge_declared_dataset_before_reading_it(files, tmp_path):
    path = str(tmp_path / 'declared.net')
    shutil.copy(files['good'], path)
    with h5py.File(path, 'r+') as f:      # 2**28 values declared, none written: a KB-sized file
        del f['layer/1/weight']
        f.create_dataset('layer/1/weight', shape=(1 << 14, 1 << 14, 1, 1), dtype=np.int8, chunks=True)
    assert os.path.getsize(path) < 1 << 20
    t0 = time.monotonic()
    with pytest.raises(NetXFormatError, match=r"layer 1 \(conv\): 'weight' declares 268435456 values"):
        read_netx(path)
    assert time.monotonic() - t0 < 5


# A Lava process model that fails at run time (the file passed validation):
# run_lava.py as __main__ with the conv layers' model patched to raise, exit or
# stall at Lava step 3; lava_runtime.default_deadline shortened for 'stall'.
FAILING_MODEL = '''
import os, runpy, sys, time
sys.path.insert(0, '.')
import lava_dtss.lava_processes.models as models
import lava_dtss.deploy.lava_runtime as lava_runtime
mode, run_spk = os.environ['FAIL_MODE'], models.PyGatedLayerModel.run_spk
def failing(self):
    if self.time_step == 3 and self.kind == 'conv':
        if mode == 'raise':
            raise ValueError('provoked failure in a process model')
        if mode == 'exit':
            os._exit(7)
        time.sleep(3600)
    return run_spk(self)
models.PyGatedLayerModel.run_spk = failing
lava_runtime.default_deadline = lambda *a: 15.0
sys.argv = ['scripts/run_lava.py'] + sys.argv[1:]
runpy.run_path('scripts/run_lava.py', run_name='__main__')
'''


@SERIAL
@pytest.mark.parametrize('mode, words', [
    ('raise', ['a Lava process failed', 'ValueError: provoked failure in a process model']),
    ('exit', ['a Lava process failed', 'exit code 7']),
    ('stall', ['did not finish within its deadline of 15 s']),
])
def test_a_failing_lava_process_ends_the_run_with_one_error_line(files, mode, words):
    res, seconds, left, shm = _run_marked(['--model', files['good'], '--num-samples', '2', '--gated-only'],
                                          150, prefix=('-c', FAILING_MODEL), env_extra={'FAIL_MODE': mode})
    line = _one_error(res)
    assert res.returncode == 4, (res.returncode, res.stderr[-2000:])
    for w in words:
        assert w in line, line
    assert 'running' in res.stdout                   # it failed inside Lava, not before
    assert seconds < 120 and left == [] and not shm, (seconds, left, shm)


# ---------------------------------------------------------------- SIGTERM, kill -9 (issue 18)
def _signal_during_a_lava_run(args, signum):
    """Run ``run_lava.py ARGS`` in its own session, send ``signum`` to it alone
    (as ``timeout``, SLURM or ``kill`` do) once Lava's processes are up. Returns
    (exit code, stderr, pids left with the marker, new psm_ segments left)."""
    marker = uuid.uuid4().hex
    shm_before = set(os.listdir('/dev/shm'))
    proc = _start_lava_run(args, marker)
    try:
        _wait_for_lava_processes(proc, marker, 120)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
        deadline = time.monotonic() + 15
        while _marked_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _marked_pids(marker)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            shm_left = {s for s in set(os.listdir('/dev/shm')) - shm_before if s.startswith('psm_')}
            if not shm_left:
                break
            time.sleep(0.5)
        return proc.returncode, stderr, left, shm_left
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pid in _marked_pids(marker):       # only processes this test started
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


SHIPPED = os.path.join(ROOT, 'netx_models', 'digits_tiny_dtss.net')


@SERIAL
@pytest.mark.parametrize('build', ['fused', 'loihi'])
def test_sigterm_stops_lava_like_ctrl_c(build):
    """SIGTERM (what ``timeout``, SLURM and systemd send) to ``run_lava.py``
    alone: exit 143, one line, every Lava process ended, no segment left."""
    code, stderr, left, shm_left = _signal_during_a_lava_run(
        ['--model', SHIPPED, '--build', build, '--num-samples', '300'], signal.SIGTERM)
    assert code == 143, stderr[-3000:]
    assert 'Traceback' not in stderr and 'terminated' in stderr, stderr[-3000:]
    assert left == [], 'Lava processes survived SIGTERM'
    assert not shm_left, shm_left


@SERIAL
@pytest.mark.parametrize('build', ['fused', 'loihi'])
def test_kill_9_ends_every_lava_process_with_its_parent(build):
    """``kill -9`` of ``run_lava.py``: nothing runs in the killed process, but
    every Lava process asked the kernel to end it with its parent
    (PR_SET_PDEATHSIG), so none is left."""
    code, stderr, left, shm_left = _signal_during_a_lava_run(
        ['--model', SHIPPED, '--build', build, '--num-samples', '300'], signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert left == [], f'{len(left)} Lava processes survived kill -9 of their parent'
    # the segments are unlinked by multiprocessing's resource tracker once every
    # process that registered them has ended
    assert not shm_left, shm_left


def test_a_stop_signal_whose_exception_was_swallowed_still_stops_the_next_run():
    """A SIGINT or SIGTERM that arrives while a finaliser runs raises inside it,
    where Python only prints "Exception ignored": the run went on to its end.
    The signal is recorded and acted on at the next check (before each Lava run,
    while it runs, before the reference run)."""
    from lava_dtss.deploy import lava_runtime
    lava_runtime._stop_signal.append(signal.SIGTERM)
    with pytest.raises(lava_runtime.Terminated):
        lava_runtime.execute(None, None, 1, None)    # raises before touching the network
    assert lava_runtime._stop_signal == []
    lava_runtime._stop_signal.append(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        lava_runtime.execute(None, None, 1, None)


FULL_JSON_WRAPPER = """
import errno, runpy, sys
sys.path.insert(0, '.')
import lava_dtss.training.checkpoints as checkpoints
def full(path, obj):
    raise OSError(errno.ENOSPC, 'No space left on device', path)
checkpoints.write_json = full
sys.argv = ['scripts/run_lava.py'] + sys.argv[1:]
runpy.run_path('scripts/run_lava.py', run_name='__main__')
"""


@pytest.mark.parametrize('build', ['fused', 'loihi'])
def test_full_disk_while_the_json_report_is_written_is_one_line(tmp_path, build):
    """A full disk under ``--json`` (of ``--build loihi`` in the issue) gave an
    ``OSError`` traceback (issue 18): one line naming the file, exit 2."""
    out = str(tmp_path / 'r.json')
    res = subprocess.run([sys.executable, '-c', FULL_JSON_WRAPPER, '--model', SHIPPED, '--build', build,
                          '--num-samples', '1', '--gated-only', '--json', out],
                         capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)
    assert res.returncode == 2 and 'Traceback' not in res.stderr, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and out in errors[0] and 'No space left' in errors[0], res.stderr[-2000:]
