"""Tests for lava_dtss/training/recipes.py and its use by the training loop: the
Spikformer recipes built from timm's components, on CIFAR-format pickle files
written here (the real format: dicts of uint8 arrays and label lists); the
--device / --amp options on CPU.

Float tolerances: an image goes uint8 -> /255 -> (x - mean) / std -> * std + mean in
float32, a few ulps of 1 (~1e-7 each): 1e-6 bounds it.
"""
import importlib.util
import json
import math
import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from lava_dtss.model.neuron import FastCubaNeuron
from lava_dtss.training import data, recipes
from lava_dtss.training.loop import TrainConfig, resolve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'train_slayer.py')
CIFAR10 = recipes.RECIPES['spikformer-cifar10']


def _cifar10_root(tmp_path, n=4):
    """torchvision's layout: ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch}, n images each."""
    d = tmp_path / 'cifar-10-batches-py'
    d.mkdir()
    rng = np.random.RandomState(0)
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        batch = {b'batch_label': b'fixture', b'labels': [int(v) for v in rng.randint(0, 10, n)],
                 b'data': rng.randint(0, 256, (n, 3072)).astype(np.uint8), b'filenames': [b'x.png'] * n}
        with open(d / name, 'wb') as f:
            pickle.dump(batch, f, protocol=2)
    return tmp_path


@pytest.fixture(scope='module')
def cifar_root(tmp_path_factory):
    return _cifar10_root(tmp_path_factory.mktemp('cifar'))


def _script():
    spec = importlib.util.spec_from_file_location('train_slayer_recipes', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- transforms

def test_cifar10_transform_is_timms_with_spikformers_settings():
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing
    from timm.data.transforms import RandomResizedCropAndInterpolation
    tf = recipes.train_transform(CIFAR10, 32).transforms
    kinds = [type(t).__name__ for t in tf]
    assert kinds == ['RandomResizedCropAndInterpolation', 'RandomHorizontalFlip', 'RandAugment', 'MaybeToTensor',
                     'Normalize', 'RandomErasing', 'Normalize', '_Clamp01'], kinds
    crop, flip, ra, erase = tf[0], tf[1], tf[2], tf[5]
    assert isinstance(crop, RandomResizedCropAndInterpolation) and crop.scale == (1.0, 1.0) and crop.ratio == (1.0, 1.0)
    assert flip.p == 0.5
    assert isinstance(ra, RandAugment) and ra.num_layers == 1 and ra.choice_weights is None
    assert [op.name for op in ra.ops] == list(recipes.SPIKFORMER_CIFAR_OPS)   # aa_snn.py's five
    assert all(op.magnitude == 9 and op.magnitude_std == 0.4 and op.prob == 0.5 for op in ra.ops)
    assert all(op.kwargs['fillcolor'] == (125, 123, 114) for op in ra.ops)   # round(255 * CIFAR-10 mean)
    assert isinstance(erase, RandomErasing) and erase.probability == 0.25 and erase.mode == 'const'
    imagenet = recipes.train_transform(recipes.RECIPES['spikformer-imagenet'], 224).transforms
    assert len(imagenet[2].ops) == 15 and imagenet[2].num_layers == 2   # timm's own list, n = 2


def test_transform_flips_erases_to_the_mean_colour_and_returns_to_0_1(cifar_root):
    """On real CIFAR pickles: hflip 1 mirrors the image exactly; reprob 1 paints one
    rectangle in the data set's mean colour (Spikformer erases with 0 in normalised
    space) and leaves the rest unchanged; the output is in [0, 1]."""
    base = data.load_dataset('cifar10', 'train', str(cifar_root))
    x, y = base[3]
    flip = recipes.AugmentedDataset(base, recipes.train_transform(
        recipes.resolve_fields('spikformer-cifar10', {'aa': None, 'hflip': 1.0, 'reprob': 0.0}), 32))
    fx, fy = flip[3]
    assert fy == y and fx.dtype == torch.float32 and fx.shape == (3, 32, 32)
    torch.testing.assert_close(fx, x.flip(-1), atol=1e-6, rtol=0)
    torch.manual_seed(0)
    random.seed(0)
    erase = recipes.AugmentedDataset(base, recipes.train_transform(
        recipes.resolve_fields('spikformer-cifar10', {'aa': None, 'hflip': 0.0, 'reprob': 1.0}), 32))
    for i in range(len(base)):
        ex, _ = erase[i]
        x = base[i][0]
        changed = (ex - x).abs().amax(0) > 1e-6                                  # [H, W]
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        assert len(rows) and len(cols)
        box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        mean = torch.tensor(CIFAR10['mean']).view(3, 1, 1)
        torch.testing.assert_close(ex[:, box[0], box[1]], mean.expand(3, *ex[:, box[0], box[1]].shape[1:]),
                                   atol=1e-6, rtol=0)
        outside = torch.ones(32, 32, dtype=torch.bool)
        outside[box] = False
        torch.testing.assert_close(ex[:, outside], x[:, outside], atol=1e-6, rtol=0)
        assert 0 <= float(ex.min()) and float(ex.max()) <= 1


def test_randaugment_changes_images_with_the_recipes_operations(cifar_root, monkeypatch):
    """With RandAugment alone (n = 1, each op applied with probability 0.5) images
    change, and the operations drawn are the recipe's five."""
    import random
    from timm.data.auto_augment import AugmentOp
    base = data.load_dataset('cifar10', 'train', str(cifar_root))
    used = []
    call = AugmentOp.__call__
    monkeypatch.setattr(AugmentOp, '__call__', lambda self, img: (used.append(self.name), call(self, img))[1])
    ds = recipes.AugmentedDataset(base, recipes.train_transform(
        recipes.resolve_fields('spikformer-cifar10', {'hflip': 0.0, 'reprob': 0.0}), 32))
    np.random.seed(0)
    random.seed(0)
    changed = sum(float((ds[i % len(base)][0] - base[i % len(base)][0]).abs().max()) > 1e-6 for i in range(40))
    assert len(used) == 40 and set(used) <= set(recipes.SPIKFORMER_CIFAR_OPS) and len(set(used)) >= 3
    assert 10 <= changed < 40


def test_imagenet_recipe_transforms_an_image_folder(tmp_path):
    """ImageNet: timm's training transform (random-resized crop, RandAugment, erasing)
    and its evaluation transform (resize to 224, centre crop) on an ImageFolder tree
    of real JPEG files, images [3, 224, 224] in [0, 1]."""
    from PIL import Image
    rng = np.random.RandomState(0)
    for split in ('train', 'val'):
        for cls in ('n01440764', 'n01443537'):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(rng.randint(0, 256, (260, 300, 3)).astype(np.uint8)).save(
                tmp_path / split / cls / 'a.JPEG', 'JPEG')
    r = recipes.RECIPES['spikformer-imagenet']
    fit = data.load_dataset('imagenet', 'train', str(tmp_path), transform=recipes.train_transform(r, 224))
    test = data.load_dataset('imagenet', 'test', str(tmp_path), transform=recipes.eval_transform(r, 224))
    for x, y in (fit[0], test[1]):
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert test[1][1] == 1
    kinds = [type(t).__name__ for t in test.transform.transforms]
    assert kinds[:2] == ['Resize', 'CenterCrop'] and test.transform.transforms[0].size == 224   # crop_pct 1.0
    with pytest.raises(data.DatasetError, match='applies to imagenet only'):
        data.load_dataset('digits', 'train', transform=recipes.eval_transform(r, 224))


# ---------------------------------------------------------------- mixup, smoothing, loss

def test_mixup_mixes_inputs_and_smoothed_targets_alike_and_switches_off():
    torch.manual_seed(0)
    np.random.seed(0)
    mix = recipes.mixup(CIFAR10, 10)
    assert mix.mixup_alpha == 0.5 and mix.cutmix_alpha == 0.0 and mix.mode == 'batch' and mix.label_smoothing == 0.1
    x = torch.rand(6, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    off, on = 0.1 / 10, 1 - 0.1 + 0.1 / 10          # label smoothing 0.1 over 10 classes
    lams = []
    for _ in range(5):
        mx, t = mix(x.clone(), y)
        lam = float(t[0, 0] - off) / (on - off)       # the weight of the sample's own label
        assert 0 <= lam <= 1
        torch.testing.assert_close(mx, lam * x + (1 - lam) * x.flip(0), atol=1e-6, rtol=0)
        smooth = torch.full((6, 10), off)
        smooth[torch.arange(6), y] = on
        torch.testing.assert_close(t, lam * smooth + (1 - lam) * smooth.flip(0), atol=1e-6, rtol=0)
        lams.append(lam)
    assert len({round(v, 6) for v in lams}) == 5 and any(v < 0.99 for v in lams)   # Beta(0.5, 0.5) draws
    mix.mixup_enabled = False            # what the loop does from mixup_off_epoch (200) on
    mx, t = mix(x.clone(), y)
    assert torch.equal(mx, x)
    assert torch.allclose(t.max(1).values, torch.tensor(on)) and torch.allclose(t.min(1).values, torch.tensor(off))
    loss = recipes.train_loss(CIFAR10)
    assert type(loss).__name__ == 'SoftTargetCrossEntropy'
    logits = torch.randn(6, 10)
    torch.testing.assert_close(loss(logits, t), -(t * logits.log_softmax(-1)).sum(-1).mean())
    plain = recipes.train_loss(recipes.resolve_fields('spikformer-cifar10', {'mixup': 0.0}))
    assert type(plain).__name__ == 'LabelSmoothingCrossEntropy'
    torch.testing.assert_close(plain(logits, y), -(t * logits.log_softmax(-1)).sum(-1).mean())


def test_imagenet_recipe_switches_between_mixup_and_cutmix():
    np.random.seed(1)
    mix = recipes.mixup(recipes.RECIPES['spikformer-imagenet'], 1000)
    assert (mix.mixup_alpha, mix.cutmix_alpha, mix.switch_prob) == (0.8, 1.0, 0.5)
    x = torch.rand(4, 3, 16, 16)
    kinds = set()
    for _ in range(20):
        mx, _ = mix(x.clone(), torch.arange(4))
        from_self = (mx - x).abs().amax(1) < 1e-6
        from_flip = (mx - x.flip(0)).abs().amax(1) < 1e-6
        kinds.add('cutmix' if bool((from_self | from_flip).all()) and bool(from_flip.any()) else 'mixup')
    assert kinds == {'mixup', 'cutmix'}


# ---------------------------------------------------------------- schedule, optimiser

def test_schedule_warms_up_from_1e5_then_cosine_then_cools_down():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=CIFAR10['lr'])
    sched = recipes.scheduler(CIFAR10, opt, CIFAR10['epochs'])
    lr = []
    for epoch in range(CIFAR10['epochs']):
        sched.step(epoch)
        lr.append(opt.param_groups[0]['lr'])
    base, low = 5e-4, 1e-5
    assert len(lr) == 310
    for e in range(20):      # linear warm-up from warmup_lr
        assert lr[e] == pytest.approx(low + e * (base - low) / 20, rel=1e-12)
    for e in (20, 100, 250, 299):   # timm: the cosine over t_initial = 300 epochs (warm-up not a prefix)
        assert lr[e] == pytest.approx(low + 0.5 * (base - low) * (1 + math.cos(math.pi * e / 300)), rel=1e-12)
    assert lr[300:] == [low] * 10   # cool-down
    assert max(lr) < base and lr[20] > lr[19]


def test_weight_decay_groups_are_timms_and_leave_out_the_gates():
    from lava_dtss.model.dtss import is_gate_parameter
    from lava_dtss.model.presets import build_model
    model = build_model('tiny')
    gates = [p for n, p in model.named_parameters() if is_gate_parameter(n)]
    groups = recipes.param_groups(model, 0.06, leave_out=gates)
    decay = {id(p) for g in groups if g['weight_decay'] == 0.06 for p in g['params']}
    none = {id(p) for g in groups if g['weight_decay'] == 0.0 for p in g['params']}
    for n, p in model.named_parameters():
        if is_gate_parameter(n):
            assert id(p) not in decay | none
        elif p.requires_grad:
            assert (id(p) in none) == (p.ndim <= 1 or n.endswith('.bias')), n
    assert decay and none


# ---------------------------------------------------------------- options

def test_recipe_sets_shared_fields_unless_given(cifar_root):
    script = _script()
    a = script.parse_args(['--recipe', 'spikformer-cifar10', '--data-dir', str(cifar_root)])
    assert (a.dataset, a.epochs, a.batch_size, a.lr, a.weight_decay) == ('cifar10', 310, 128, 5e-4, 6e-2)
    assert a.amp == 'off' and a.device == 'cpu'          # fp16 is the recipe's on CUDA only
    b = script.parse_args(['--recipe', 'spikformer-cifar10', '--lr', '3e-3', '--epochs', '60',
                           '--recipe-config', 'mixup_off_epoch=40', '--recipe-config', 'aa=rand-m7-n2'])
    assert (b.lr, b.epochs, b.batch_size) == (3e-3, 60, 128)     # 3e-3 is the default, given explicitly
    assert b.recipe_fields['mixup_off_epoch'] == 40 and b.recipe_fields['aa'] == 'rand-m7-n2'
    assert resolve(b) == b                                  # resolving again changes nothing
    c = resolve(TrainConfig(recipe='spikformer-cifar100', batch_size=32))
    assert (c.dataset, c.batch_size, c.lr, c.recipe_fields['mean'][0]) == ('cifar100', 32, 5e-4, 0.5071)
    assert resolve(TrainConfig()) == resolve(resolve(TrainConfig()))
    assert resolve(TrainConfig()).recipe_fields == {} and resolve(TrainConfig()).amp == 'off'


@pytest.mark.parametrize('argv, words', [
    (['--recipe', 'spikformer-cifar10', '--dataset', 'digits'], 'is for --dataset cifar10, not digits'),
    (['--recipe', 'spikformer-cifar10', '--augment', '2'], '--augment is the lava-dtss recipe'),
    (['--recipe', 'spikformer-cifar10', '--lr-schedule', 'step'], 'steps timm\'s CosineLRScheduler once per epoch'),
    (['--recipe', 'spikformer-cifar10', '--epochs', '30'], '--epochs 30 leaves no cosine epochs'),
    (['--recipe', 'spikformer-cifar10', '--batch-size', '7'], 'needs an even batch size'),
    (['--recipe', 'spikformer-cifar10', '--recipe-config', 'mixup=-1'], 'mixup=-1: expected a finite number'),
    (['--recipe', 'spikformer-cifar10', '--recipe-config', 'scale=1'], 'unknown or fixed field \'scale\''),
    (['--recipe-config', 'mixup=0'], 'applies to the spikformer-* recipes'),
    (['--amp', 'fp16'], '--amp fp16 needs a CUDA device'),
    (['--device', 'tpu9'], 'not a torch device'),
])
def test_bad_recipe_device_and_amp_options_exit_2_with_one_line(capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        _script().parse_args(argv)
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if ': error: ' in line]
    assert len(err) == 1 and words in err[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message of a machine without CUDA')
def test_cuda_device_without_cuda_is_one_error():
    with pytest.raises(ValueError, match='this machine has no CUDA device'):
        resolve(TrainConfig(device='cuda'))


# ---------------------------------------------------------------- neuron under autocast

def test_neuron_keeps_its_integer_state_in_float32_under_autocast():
    """A float16 / bfloat16 input current (what autocast's convolutions give) is
    integrated in float32, as the same values in float32 would be (in float16,
    4096 * x overflows from x = 16 on); spikes come out in float32, gradients in
    the input's dtype."""
    torch.manual_seed(0)
    neuron = FastCubaNeuron(threshold=1.0, current_decay=0.5, voltage_decay=0.5, tau_grad=0.01, scale_grad=20.0)
    for dtype in (torch.float16, torch.bfloat16):
        x = (torch.rand(4, 64, 8) * 22 - 2).to(dtype).requires_grad_()
        s = neuron(x)
        assert s.dtype == torch.float32
        assert torch.equal(s, neuron(x.detach().float())) and 0 < float(s.mean()) < 1
        s.sum().backward()
        assert x.grad.dtype == dtype and bool(torch.isfinite(x.grad.float()).all())


# ---------------------------------------------------------------- training runs

def _run(args):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    for name in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK'):
        env.pop(name, None)
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_spikformer_4_384_trains_and_exports_under_the_cifar10_recipe(cifar_root, tmp_path):
    """Two epochs of one batch each (warm-up 1 epoch, no cool-down) on CIFAR pickles
    in torchvision's root layout: the log's learning rates are the schedule's,
    the model exports and its quantized accuracy is measured."""
    out = tmp_path / 'run'
    proc = _run(['--recipe', 'spikformer-cifar10', '--data-dir', cifar_root, '--epochs', 2,
                 '--recipe-config', 'warmup_epochs=1', '--recipe-config', 'cooldown_epochs=0',
                 '--batch-size', 2, '--max-batches', 1, '--bn-calibration', 0, '--threads', 1, '--out', out])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    log = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]
    assert [e['epoch'] for e in log] == [1, 2]
    assert log[0]['lr'] == pytest.approx(1e-5, rel=1e-12)       # warmup_lr
    assert log[1]['lr'] == pytest.approx(1e-5 + 0.5 * (5e-4 - 1e-5) * (1 + math.cos(math.pi / 2)), rel=1e-12)
    m = json.loads((out / 'metrics.json').read_text())
    assert m['preset'] == 'spikformer-4-384' and m['dataset'] == 'cifar10' and m['recipe'] == 'spikformer-cifar10'
    assert m['recipe_fields']['warmup_epochs'] == 1 and m['recipe_fields']['mixup'] == 0.5
    assert m['device'] == 'cpu' and m['amp'] == 'off' and m['train_images'] == 2
    assert 0 <= m['quantized_test_accuracy'] <= 1 and os.path.getsize(out / 'model.net') > 1e6
    ckpt = torch.load(out / 'checkpoint.pt', map_location='cpu', weights_only=True)
    assert ckpt['epoch'] == 2 and ckpt['args']['recipe'] == 'spikformer-cifar10'


def test_bf16_autocast_trains_on_cpu(tmp_path):
    """--amp bf16 on CPU: the tiny preset trains (loss finite), evaluates and exports."""
    out = tmp_path / 'bf16'
    proc = _run(['--amp', 'bf16', '--epochs', 1, '--max-batches', 2, '--batch-size', 8, '--bn-calibration', 64,
                 '--out', out])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    m = json.loads((out / 'metrics.json').read_text())
    assert m['amp'] == 'bf16' and m['device'] == 'cpu' and math.isfinite(m['test_accuracy'])
    assert 'quantized_test_accuracy' in m


def test_gpu_check_runs_on_cpu_and_names_what_it_skipped(tmp_path):
    """scripts/gpu_check.py on a machine without CUDA: the CPU checks pass and each
    check that needs a GPU is listed as skipped."""
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'gpu_check.py'), '--device', 'cpu',
                           '--steps', '1'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert 'ok       neuron forward (compiled CPU loop vs PyTorch path)' in out
    assert 'ok       neuron backward' in out and 'ok       spikformer-4-384 training steps, amp bf16' in out
    for needs_gpu in ('fp16 autocast with GradScaler (needs CUDA)', 'spikes on CUDA vs CPU for the same weights',
                      'spikformer-8-768 training steps'):
        assert f'skipped: {needs_gpu}' in out
    assert ', 0 failed, 3 skipped' in out


def test_resume_under_the_recipe_is_bitwise_exact(cifar_root, tmp_path):
    """A small CIFAR model under the recipe: one epoch, then --resume to two, equals two
    epochs straight, bit for bit (timm's transforms and Mixup draw from python's
    random, numpy and torch; random.gauss's cached second value is part of the state)."""
    small = ['--recipe', 'spikformer-cifar10', '--data-dir', cifar_root, '--recipe-config', 'warmup_epochs=0',
             '--recipe-config', 'cooldown_epochs=0', '--batch-size', 4, '--max-batches', 2, '--bn-calibration', 8,
             '--no-export', '--threads', 1, '--config', 'embed_dim=32', '--config', 'heads=2', '--config', 'depth=1',
             '--config', 'sps=[[8, 1], [16, 1], [32, 2]]']
    a, b = tmp_path / 'a', tmp_path / 'b'
    for args in (['--epochs', 2, '--out', a], ['--epochs', 1, '--out', b], ['--epochs', 2, '--out', b, '--resume']):
        proc = _run(small + args)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ca = torch.load(a / 'checkpoint.pt', map_location='cpu', weights_only=True)
    cb = torch.load(b / 'checkpoint.pt', map_location='cpu', weights_only=True)
    assert ca['epoch'] == cb['epoch'] == 2 and set(ca['model']) == set(cb['model'])
    for name in ca['model']:
        assert torch.equal(ca['model'][name], cb['model'][name]), name
    assert ca['rng']['python'] == cb['rng']['python'] and ca['scheduler'] == cb['scheduler']
