"""Issue 18's lesser faults (a nonsensical value accepted, or a line that names
neither the file nor the key): each refused in one line before any work."""
import os

import pytest
from script_loader import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name):
    return load_script(name)


@pytest.mark.parametrize('args,words', [
    (['--init-steps', 'qkv=2,qkv=3'], "gives category 'qkv' twice"),
    (['--init-steps', '2,3'], 'gives the default K twice'),
    (['--init-steps', '2', '--fixed-t', '4'], '--fixed-t has no gates'),
])
def test_init_steps_duplicates_and_with_fixed_t_are_refused(capsys, args, words):
    """Duplicate values used to let the last one win silently; with --fixed-t
    they were ignored."""
    with pytest.raises(SystemExit) as e:
        _script('train_slayer').parse_args(['--out', '/tmp/never-written'] + args)
    assert e.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize('where', ['/proc/x.net', '/proc/nope/x.net'])
def test_a_network_file_that_cannot_be_written_is_named_not_its_temporary_file(where):
    """Export errors named the temporary file ``/proc/.x.net.<pid>.tmp``."""
    from lava_dtss.deploy.netx_file import read_netx, write_netx
    spec = read_netx(os.path.join(ROOT, 'netx_models', 'digits_tiny_dtss.net'))
    with pytest.raises(OSError) as e:
        write_netx(spec, where)
    assert e.value.filename == where and '.tmp' not in str(e.value), str(e.value)
    assert 'cannot write the network file (No such file or directory)' in str(e.value)


def _edit_t_max(f):
    del f['meta/t_max']
    f['meta/t_max'] = 9


def _edit_qkv(f):
    del f['layer/7/dtss/inputs']
    f['layer/7/dtss/inputs'] = [4, 4, 6]


def _edit_scale(f):
    del f['layer/0/dtss/inputScale']
    f['layer/0/dtss/inputScale'] = 0


@pytest.mark.parametrize('edit,words', [
    (_edit_t_max, 'meta/t_max = 9 but meta/config has t_max = 8'),
    (_edit_qkv, r"layer 7 \(attention 'blocks.0.ssa.attn'\): dtss/inputs \[4, 4, 6\] must name three "
                'different layers'),
    (_edit_scale, r'dtss/inputScale = 0 must be >= 1')])
def test_our_files_inconsistent_with_their_config_are_refused_when_read(tmp_path, edit, words):
    """Were found only after the whole Lava run, as "Lava differs"."""
    import shutil

    import h5py
    from lava_dtss.deploy.netx_file import NetXFormatError, read_netx
    path = str(tmp_path / 'm.net')
    shutil.copy(os.path.join(ROOT, 'netx_models', 'digits_tiny_dtss.net'), path)
    with h5py.File(path, 'a') as f:
        edit(f)
    with pytest.raises(NetXFormatError, match=words):
        read_netx(path)


@pytest.mark.parametrize('ckpt,t_max,words', [
    ({'dtss': False, 'args': {'fixed_t': 4}}, 4, 'is a fixed-T run: its DTSS gates are disabled'),
    ({'dtss': False, 'args': {'ann': True, 'fixed_t': 1}}, 4, 'is an ANN run'),
    ({'dtss': True, 'args': {}}, 8, 'was trained with T_max = 4, this run has T_max = 8'),
])
def test_gates_from_refuses_fixed_t_ann_and_other_t_max_checkpoints(tmp_path, ckpt, t_max, words):
    """They were accepted: a fixed-T or ANN run's gates hold their initial
    T_max/2, and a length learned for another T_max means other steps."""
    import torch
    from lava_dtss.training import TrainingError
    from lava_dtss.training.checkpoints import learned_gate_steps
    path = str(tmp_path / 'c.pt')
    torch.save(dict(ckpt, model={'blocks.0.ssa.q.gate.length': torch.tensor([2.0])}, config={'t_max': 4}), path)
    with pytest.raises(TrainingError) as e:
        learned_gate_steps(path, t_max)
    assert path in str(e.value) and words in str(e.value) and '\n' not in str(e.value)
    ok = str(tmp_path / 'ok.pt')
    torch.save(dict(model={'blocks.0.ssa.q.gate.length': torch.tensor([2.0])}, config={'t_max': 4}, dtss=True), ok)
    assert learned_gate_steps(ok, 4) == {'blocks.0.ssa.q.gate': 2}


def test_reset_interval_on_a_layer_synchronous_file_is_refused(monkeypatch):
    """``--reset-interval`` on our own files (layer-synchronous: every sample
    starts from zero) was silently ignored."""
    from lava_dtss.deploy import lava_runtime
    monkeypatch.setattr(lava_runtime, 'execute', lambda *a, **k: pytest.fail('a Lava run started'))
    with pytest.raises(ValueError, match='a reset interval/offset applies to stock NetX timing; this file runs '
                                         'layer-synchronously'):
        _script('run_lava').main(['--num-samples', '2', '--reset-interval', '4', '--gated-only'])


def test_nir_export_refuses_an_input_neuron_instead_of_dropping_it():
    """Now that the reader keeps an input layer's neuron (issue 18), the NIR
    exporter, which writes the input as data, must not silently drop it."""
    from lava.lib.dl import netx
    from lava_dtss.deploy.netx_file import read_netx
    from lava_dtss.deploy.nir_interchange import NIRExportError, export_nir
    tiny = os.path.join(os.path.dirname(netx.__file__), *['..'] * 4, 'tests', 'lava', 'lib', 'dl', 'netx',
                        'tiny.net')
    with pytest.raises(NIRExportError, match=r'layer 0 \(input \'layer0\'\): an input layer with a neuron'):
        export_nir(tiny)
    assert export_nir(read_netx(tiny, skip_input_neuron=True)) is not None
