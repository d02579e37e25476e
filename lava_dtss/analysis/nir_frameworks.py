"""Small spiking CNNs built and trained in snnTorch and in Norse on scikit-learn's
digits, their own NIR exports, and the comparison of their own simulation with
the imported network on Lava (``tests/test_nir.py``, ``scripts/nir_compare.py``).

Both networks keep to what NIR's equations say, so that the framework, the NIR
graph and Lava describe one network: reset to zero (snnTorch's default is
subtraction, which NIR cannot express), per-neuron parameter arrays (snnTorch's
export calls ``infer_types``, which fails on scalar ``beta``), constant direct
input (the image at every step), and the class is the output layer's spike
count (argmax, lowest index on ties, as the Lava readout).
"""
from __future__ import annotations

import time

import numpy as np
import torch

T = 8                  # time steps per sample
SNNTORCH_DT = 1e-4     # snntorch.export_nir writes tau = dt / (1 - beta) with dt = 1e-4
NORSE_DT = 1e-3        # Norse's default step
NORSE_DT_NIR = 1e-6    # Norse 1.1.0 writes tau = dt / tau_inv (norse#411): Euler-consistent at dt**2


def digits(split: str):
    """``(images [S, 1, 8, 8] float32 in [0, 1], labels [S])`` of our digits split."""
    from ..training.data import load_dataset
    ds = load_dataset('digits', split)
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs).float(), torch.as_tensor(ys)


class Source:
    """A trained network in its own framework: ``counts(x)`` runs the framework's
    simulation for ``T`` steps and returns the output spike counts ``[S, 10]``;
    ``graph()`` is the framework's own NIR export; ``dt`` the step for
    ``import_nir``."""

    def __init__(self, name, net, run, export, dt, framework, train_s, epochs):
        self.name, self.net, self._run, self._export = name, net, run, export
        self.dt, self.framework, self.train_s, self.epochs = dt, framework, train_s, epochs

    @torch.no_grad()
    def counts(self, images: torch.Tensor) -> np.ndarray:
        return self._run(images).reshape(images.shape[0], -1).numpy()

    def graph(self):
        return self._export()


def _train(net, run, epochs, lr, seed):
    x, y = digits('train')
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    t0 = time.perf_counter()
    for ep in range(epochs):
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1000 + ep))
        for b in range(0, len(x), 64):
            idx = perm[b:b + 64]
            loss = torch.nn.functional.cross_entropy(run(x[idx]).reshape(len(idx), -1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def snntorch_cnn(epochs: int = 8, seed: int = 0) -> Source:
    """Conv(1->8, 3x3) - Leaky - AvgPool(2) - Flatten - Linear(128->10, no bias) -
    Synaptic, trained ``epochs`` epochs (BPTT over ``T`` steps, cross-entropy on
    spike counts). Exports LIF, CubaLIF, Conv2d, AvgPool2d, Flatten, Linear."""
    import snntorch as snn
    from snntorch.export_nir import export_to_nir
    torch.manual_seed(seed)
    common = dict(init_hidden=True, reset_mechanism='zero', reset_delay=False)

    def leaky(shape, **kw):
        return snn.Leaky(beta=torch.full(shape, 0.9), threshold=torch.ones(shape), **common, **kw)

    def synaptic(shape, **kw):
        return snn.Synaptic(alpha=torch.full(shape, 0.5), beta=torch.full(shape, 0.9),
                            threshold=torch.ones(shape), **common, **kw)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), leaky((8, 8, 8)), torch.nn.AvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10, bias=False), synaptic((10,), output=True))

    def reset():
        for m in net.modules():
            if isinstance(m, (snn.Leaky, snn.Synaptic)):
                m.reset_mem()

    def run(x):
        reset()
        count = 0
        for _ in range(T):
            count = count + net(x)[0]
        return count

    def export():
        reset()
        return export_to_nir(net, torch.zeros(1, 1, 8, 8), ignore_dims=[0])
    secs = _train(net, run, epochs, 5e-3, seed)
    return Source('snntorch', net, run, export, SNNTORCH_DT, f'snntorch {snn.__version__}', secs, epochs)


def norse_cnn(epochs: int = 10, seed: int = 0) -> Source:
    """Conv(1->8, 3x3) - LIFBox - Conv(8->16, 3x3, stride 2) - LIFBox -
    Conv(16->10, 4x4) - LIFBox (no Flatten: Norse 1.1.0's ``to_nir`` cannot export
    it), trained ``epochs`` epochs. Exports Conv2d and LIF."""
    import norse
    import norse.torch as nt
    torch.manual_seed(seed)
    net = nt.SequentialState(
        torch.nn.Conv2d(1, 8, 3, padding=1), nt.LIFBoxCell(dt=NORSE_DT),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), nt.LIFBoxCell(dt=NORSE_DT),
        torch.nn.Conv2d(16, 10, 4), nt.LIFBoxCell(dt=NORSE_DT))

    def run(x):
        state, count = None, 0
        for _ in range(T):
            z, state = net(x, state)
            count = count + z
        return count.flatten(1)

    def export():
        return nt.to_nir(net, torch.zeros(1, 1, 8, 8), dt=NORSE_DT)
    secs = _train(net, run, epochs, 1e-2, seed)
    return Source('norse', net, run, export, NORSE_DT_NIR, f'norse {norse.__version__}', secs, epochs)


def compare(source: Source, graph, spec, images, labels, batch: int = 120, loihi_samples: int = 0) -> dict:
    """The framework's own simulation, the float NIR reference of this project
    (``nir_interchange.simulate``) and the imported network on Lava (fused
    runtime; with ``loihi_samples``, also the standard-process build on the first
    samples, checked spike for spike against the fused run) on the same images."""
    from ..deploy import lava_runtime
    from ..deploy.nir_interchange import simulate
    from ..deploy.reference import direct_images
    labels = np.asarray(labels)
    src = source.counts(images)
    sim, _ = simulate(graph, images.numpy(), source.dt, T)
    frames = direct_images(images, spec.layers[0].params['inputScale'])
    res = lava_runtime.run(spec, frames, gating=False, batch=min(batch, len(images)), t_max=T)
    lava = res.logits

    def acc(c):
        return float((c.argmax(1) == labels).mean())
    same = np.all(lava == src, axis=1)
    out = {'framework': source.framework, 'samples': int(len(labels)), 'steps': T, 'dt_nir': source.dt,
           'input_scale': int(spec.layers[0].params['inputScale']),
           'train_epochs': source.epochs, 'train_s': round(source.train_s, 1),
           'accuracy_source': acc(src), 'accuracy_lava': acc(lava), 'accuracy_nir_reference': acc(sim),
           'accuracy_diff_pp': round(100 * (acc(lava) - acc(src)), 3),
           'predictions_agree': float((lava.argmax(1) == src.argmax(1)).mean()),
           'output_counts_identical': float(same.mean()),
           'output_count_mean_abs_diff': float(np.abs(lava - src).mean()),
           'output_spikes_source': int(src.sum()), 'output_spikes_lava': int(lava.sum()),
           'nir_reference_counts_identical_to_source': float(np.all(sim == src, axis=1).mean()),
           'lava_wall_s': round(res.wall_s, 2)}
    if loihi_samples:
        from ..deploy.loihi_build import run as run_loihi
        n = min(loihi_samples, len(images))
        lres = run_loihi(spec, frames[:n], t_max=T)
        sub = lava_runtime.run(spec, frames[:n], gating=False, batch=n, t_max=T)
        out['loihi_build_samples'] = n
        out['loihi_build_spikes_equal_fused'] = all(
            np.array_equal(lres.fingerprints[k], sub.fingerprints[k]) for k in sub.fingerprints)
        out['loihi_build_counts_equal_fused'] = bool(np.array_equal(lres.logits, sub.logits))
    return out
