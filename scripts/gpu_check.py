#!/usr/bin/env python
"""Check the CUDA path of lava-dtss on this machine, and say what was checked.

    python scripts/gpu_check.py               # cuda if available, else cpu
    python scripts/gpu_check.py --device cpu  # what a machine without a GPU can check

1. The CUBA-LIF neuron (lava_dtss/model/neuron.py) on the device against the CPU
   path, float32, input [N, C, T] = [8, 4096, 8]: spikes and voltages must be
   equal (the same integer arithmetic), input gradients within rtol 1e-5 and
   atol 1e-6 * max|grad| (exp of the surrogate rounds differently; the transposed
   leaky integrator adds T terms with factors <= 1). On CPU: the compiled loop
   against the PyTorch path (the one CUDA uses).
2. A few AdamW steps of every preset on random images of its size, per autocast
   mode (off; bf16 where the device has it; fp16 with GradScaler on CUDA): the
   loss must stay finite; time per step reported. On CUDA also the fraction of
   output spikes of a forward pass equal to the CPU's for the same weights
   (TF32 off; >= 0.99: a current within float rounding of the threshold may flip).
3. ``lava_dtss.train`` end to end on digits on the device (one epoch, two
   batches, fp32 and each autocast mode): its checkpoint loads into a CPU
   model, and the export (on CPU) is written.
Exit status 1 if a check failed. Every check that needs CUDA is listed as
skipped on a machine without it.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
import torch  # noqa: E402

from lava_dtss.model import neuron as nrn  # noqa: E402
from lava_dtss.model.presets import PRESETS, build_model  # noqa: E402

results = []   # (check, 'ok' | 'FAILED' | 'skipped', detail)


def record(check, ok, detail=''):
    results.append((check, 'skipped' if ok is None else 'ok' if ok else 'FAILED', detail))
    print(f'{results[-1][1]:8s} {check}: {detail}', flush=True)


def check_neuron(device):
    torch.manual_seed(0)
    n = nrn.FastCubaNeuron(threshold=1.0, current_decay=0.25, voltage_decay=0.5, tau_grad=0.01, scale_grad=20.0)
    x = torch.rand(8, 4096, 8) * 1.5 - 0.25
    du, dv = int(n.cx_current_decay), int(n.cx_voltage_decay)
    if device.type == 'cpu':   # compiled loop vs PyTorch path
        a, b = nrn.cuba_forward(x, du, dv, 1.0, use_compiled=True), nrn.cuba_forward(x, du, dv, 1.0, use_compiled=False)
        what, other = 'compiled CPU loop vs PyTorch path', 'PyTorch'
    else:
        a, b = nrn.cuba_forward(x, du, dv, 1.0), nrn.cuba_forward(x.to(device), du, dv, 1.0)
        what, other = f'CPU vs {device}', device.type
    same = torch.equal(a[0], b[0].cpu()) and torch.equal(a[1], b[1].cpu())
    record(f'neuron forward ({what})', same, f'spikes and voltages identical: {same}, rate {float(a[0].mean()):.3f}')
    grads = []
    for xd, kernel in ((x, '1'), (x.to(device), '0' if device.type == 'cpu' else '1')):
        os.environ['LAVA_DTSS_KERNEL'] = kernel   # '0': the PyTorch path (read at every call)
        xi = xd.clone().requires_grad_()
        s = n(xi)
        (s * torch.linspace(-1, 1, s.shape[-1], device=s.device)).sum().backward()
        grads.append(xi.grad.cpu())
    os.environ.pop('LAVA_DTSS_KERNEL', None)
    err = float((grads[0] - grads[1]).abs().max())
    scale = float(grads[0].abs().max())
    ok = torch.allclose(grads[1], grads[0], rtol=1e-5, atol=1e-6 * scale)
    record(f'neuron backward (CPU vs {other})', ok, f'max |diff| {err:.2e} of max |grad| {scale:.2e}')


def amp_modes(device):
    modes = ['off']
    if device.type == 'cpu' or (device.type == 'cuda' and torch.cuda.is_bf16_supported()):
        modes.append('bf16')
    if device.type == 'cuda':
        modes.append('fp16')
    return modes


def check_presets(device, steps, big_on_cpu):
    for name, cfg in PRESETS.items():
        big = cfg.image_size >= 224
        if device.type == 'cpu' and big and not big_on_cpu:
            record(f'{name} training steps', None, 'on CPU only with --big-on-cpu (minutes a step); run on a GPU')
            continue
        batch = 2 if cfg.embed_dim >= 384 else 8
        for amp in amp_modes(device):
            torch.manual_seed(0)
            model = build_model(name).to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            scaler = torch.cuda.amp.GradScaler() if amp == 'fp16' else None
            x = torch.rand(batch, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
            y = torch.randint(0, cfg.num_classes, (batch,), device=device)
            losses, t0 = [], None
            for i in range(steps + 1):   # the first step warms up (cuDNN choice, allocations)
                if i == 1:
                    torch.cuda.synchronize() if device.type == 'cuda' else None
                    t0 = time.perf_counter()
                with torch.autocast(device.type, dtype=torch.bfloat16 if amp == 'bf16' else torch.float16,
                                    enabled=amp != 'off'):
                    logits = model(x)
                loss = torch.nn.functional.cross_entropy(logits.float(), y)
                opt.zero_grad()
                (scaler.scale(loss) if scaler else loss).backward()
                scaler.step(opt) if scaler else opt.step()
                scaler.update() if scaler else None
                losses.append(float(loss))
            torch.cuda.synchronize() if device.type == 'cuda' else None
            ms = (time.perf_counter() - t0) / steps * 1e3
            ok = all(torch.isfinite(torch.tensor(losses)))
            record(f'{name} training steps, amp {amp}', ok,
                   f'batch {batch}, {ms:.0f} ms/step, loss {losses[0]:.3f} -> {losses[-1]:.3f}')
    if device.type == 'cpu':
        record('fp16 autocast with GradScaler', None, 'needs CUDA')
        record('spikes on CUDA vs CPU for the same weights', None, 'needs CUDA')
        return
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    for name in ('fmnist', 'spikformer-4-384'):
        cfg = PRESETS[name]
        torch.manual_seed(0)
        model = build_model(name).eval()
        x = torch.rand(2, cfg.in_channels, cfg.image_size, cfg.image_size)
        with torch.no_grad():
            _, cpu = model.forward_with_spikes(x)
            model.to(device)
            _, gpu = model.forward_with_spikes(x.to(device))
        total = sum(s.numel() for s in cpu.values())
        equal = sum(int((cpu[k] == gpu[k].cpu()).sum()) for k in cpu) / total
        record(f'{name} forward spikes CUDA vs CPU', equal >= 0.99, f'{equal:.5f} of {total} spike values equal')


def check_train(device):
    import lava_dtss
    from lava_dtss.training.checkpoints import load_checkpoint
    for amp in amp_modes(device):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            m = lava_dtss.train(dataset='digits', device=str(device), amp=amp, epochs=1, max_batches=2,
                                batch_size=8, bn_calibration=64, out=out)
            ckpt = load_checkpoint(os.path.join(out, 'checkpoint.pt'))
            model = build_model('tiny')
            model.load_state_dict(ckpt['model'])
            ok = os.path.isfile(os.path.join(out, 'model.net')) and all(
                t.device.type == 'cpu' for t in model.state_dict().values())
            record(f'lava_dtss.train on {device}, amp {amp}', ok,
                   f'{time.perf_counter() - t0:.1f} s, test accuracy {m["test_accuracy"]:.3f}, '
                   f'quantized {m["quantized_test_accuracy"]:.3f}; checkpoint loads on CPU')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--steps', type=int, default=3, help='timed training steps per preset and mode (default 3)')
    p.add_argument('--big-on-cpu', action='store_true', help='also spikformer-8-768 (224 px) on CPU')
    args = p.parse_args(argv)
    from lava_dtss.training.loop import check_device
    try:
        device = check_device(args.device)
    except ValueError as e:
        p.error(str(e))
    print(f'device {device}' + (f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else '')
          + f', torch {torch.__version__}', flush=True)
    if device.type != 'cuda':
        print('no CUDA device: the CUDA checks are listed as skipped', flush=True)
    check_neuron(device)
    check_presets(device, args.steps, args.big_on_cpu)
    check_train(device)
    failed = [r for r in results if r[1] == 'FAILED']
    skipped = [r for r in results if r[1] == 'skipped']
    print(f'\n{len(results) - len(failed) - len(skipped)} ok, {len(failed)} failed, {len(skipped)} skipped'
          + ''.join(f'\n  skipped: {c} ({d})' for c, _, d in skipped))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
