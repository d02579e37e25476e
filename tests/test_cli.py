"""run_lava.py report and export_netx.py on their own (in-process)."""
import importlib.util
import json
import os

import torch

from lava_dtss.model import build_model
from lava_dtss.netx_file import read_netx
from lava_dtss.training import save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'scripts', name + '.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_run_lava_json_report_without_gating(tmp_path, capsys):
    out = tmp_path / 'report.json'
    code = _script('run_lava').main(['--num-samples', '3', '--no-gating', '--json', str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report['num_samples'] == 3 and report['t_max'] == 8
    assert report['agreement']['spikes_equal_all_layers'] and report['agreement']['logits_equal']
    assert report['agreement']['predictions'] == 1.0
    assert 'synops_ungated' in report and 'synops_gated' not in report
    assert report['neuron_updates_ungated'] == sum(
        e['neuron_updates_ungated'] for e in report['layers'].values())
    assert 'identical' in capsys.readouterr().out


def test_run_lava_batched_report(tmp_path, capsys):
    out = tmp_path / 'report.json'
    code = _script('run_lava').main(['--num-samples', '5', '--batch', '2', '--gated-only',
                                     '--json', str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report['batch'] == 2 and report['lava_steps'] == 3 * report['t_max']
    assert report['agreement']['spikes_equal_all_layers'] and report['agreement']['logits_equal']
    assert report['memory_mb']['total'] > 0
    assert 'batch 2' in capsys.readouterr().out


def test_export_netx_from_a_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model('tiny')
    ckpt = tmp_path / 'checkpoint.pt'
    save_checkpoint(str(ckpt), model=model.state_dict(), config=model.cfg.to_dict(), dtss=True,
                    args={'dataset': 'digits'})
    out = tmp_path / 'm.net'
    assert _script('export_netx').main([str(ckpt), '--out', str(out)]) == 0
    spec = read_netx(str(out))
    assert spec.meta['dataset'] == 'digits' and spec.layers[-1].type == 'readout'
    card = json.loads((tmp_path / 'm.json').read_text())
    assert card['preset'] == 'tiny' and 0 <= card['quantized_test_accuracy'] <= 1
    assert set(card['active_steps']) == {n for n, _ in model.gated_layers()}


def test_benchmark_runs_small_and_checks_lava_against_the_reference():
    """scripts/benchmark.py end to end at toy sizes: every section printed, Lava equal to the reference."""
    import subprocess
    import sys
    cmd = [sys.executable, 'scripts/benchmark.py', '--preset', 'tiny', '--batch-size', '4', '--train-steps', '1',
           '--rounds', '1', '--threads', '1', '--model', 'netx_models/digits_tiny_dtss.net', '--lava-samples', '6',
           '--single-samples', '2', '--batch', '4']
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for words in ('## Training', 'stock slayer.neuron.cuba', 'clipped ReLU', '## Lava', 'Lava gated, B=4',
                  'Lava ungated, B=4', 'measured wall-time saving'):
        assert words in proc.stdout, proc.stdout
