"""Vectorised Python process models (``fixed_pt``) of the DTSS ViT processes,
bit-accurate to Lava's Loihi 2 fixed-point LIF (``lava_dtss.loihi2.lif_step``), a
leading sample axis of size ``B`` on every state and message. Models only: no
side effects."""
import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from lava_dtss.fixed_point import (FLOAT32_EXACT, conv2d, conv2d_general, conv_fanout,
                                  fingerprint_rows)
from lava_dtss.loihi2 import lif_step, sigma_delta_step
from lava_dtss.lava_processes.process import (FrameInput, GatedAttention, GatedLayer,
                                              Readout, SpikeProbe)


LIF_BLOCK = 1 << 16   # neurons per lif_step call (several int64 passes stay in cache)


def _window(model, num_samples):
    """``(first sample, real samples, window step t)`` of the current Lava step;
    ``(0, 0, -1)`` while the pipeline fills (before the model's ``offset``)."""
    g = model.time_step - 1 - getattr(model, 'offset', 0)
    if g < 0:
        return 0, 0, -1
    first = (g // model.t_max) * model.batch
    return first, max(0, min(model.batch, num_samples - first)), g % model.t_max


@implements(proc=FrameInput, protocol=LoihiProtocol)
@requires(CPU)
@tag('fixed_pt')
class PyFrameInputModel(PyLoihiProcessModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    frames: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.t_max, self.batch, self.timed = (proc_params[k] for k in ('t_max', 'batch', 'timed'))
        self._out = None

    def run_spk(self):
        first, n, t = _window(self, self.frames.shape[0])
        if self._out is None:
            self._out = np.zeros(self.s_out.shape)
        x = self.frames[first:first + n]
        self._out[:n] = x[..., t] if self.timed else x
        self._out[n:] = 0
        self.s_out.send(self._out)


class _GatedModel(PyLoihiProcessModel):
    """Window bookkeeping, neuron update, gating, counting and recording."""
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    fingerprint_rec: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    u: np.ndarray = LavaPyType(np.ndarray, np.int64)
    v: np.ndarray = LavaPyType(np.ndarray, np.int64)
    synops: np.ndarray = LavaPyType(np.ndarray, np.int64)
    neuron_updates: np.ndarray = LavaPyType(np.ndarray, np.int64)
    fingerprint: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = proc_params
        self.t_max, self.active_steps, self.gating = p['t_max'], p['active_steps'], p['gating']
        self.vth, self.du, self.dv = p['vth'], p['du'], p['dv']
        self.num_samples, self.num_steps = p['num_samples'], p['num_steps']
        self.offset, self.whc = p.get('offset', 0), p.get('layout') == 'whc'
        self.batch = None

    def receive(self):
        raise NotImplementedError

    def synapse(self, inputs, n):
        """Synaptic input ``[n, ...]`` (integers) of the first ``n`` samples of
        ``inputs`` and the synaptic operations it took."""
        raise NotImplementedError

    def neuron_bias(self):
        return 0

    def run_spk(self):
        inputs = self.receive()
        if self.proc_params.get('timing') == 'stock':
            return self._run_stock(inputs)
        if self.batch is None:   # scratch, reused every step
            self.batch = self.u.shape[0]
            self._out, self._sent_spikes = np.zeros(self.u.shape), False
            self._tmp, self._spikes = np.empty(self.u.shape, np.int64), np.empty(self.u.shape, bool)
        first, n, t = _window(self, self.num_samples)
        if t == 0:
            self.u[...] = 0
            self.v[...] = 0
        active = t < self.active_steps
        out = self._out
        if self._sent_spikes:                # zero the message buffer only when needed
            out[...] = 0
            self._sent_spikes = False
        if n and (active or not self.gating):
            a, ops = self.synapse(inputs, n)
            self.synops[0] += ops
            self.neuron_updates[0] += n * (self.u.size // self.batch)
            bias = self.neuron_bias()
            rows = max(1, LIF_BLOCK // (self.u.size // self.batch))
            for r in range(0, n, rows):      # blocks of samples that stay in cache
                b = slice(r, min(n, r + rows))
                lif_step(self.u[b], self.v[b], a[b], bias, self.du, self.dv, self.vth,
                         self._tmp[b], self._spikes[b])
            if active:
                out[:n] = self._spikes[:n]
                self._sent_spikes = True
                rows = (first + np.arange(n)) * self.t_max + t
                self.fingerprint[rows] = fingerprint_rows(out[:n])
        p, k = self.proc_params, self.time_step
        if k <= p.get('record_steps', 0):    # batch 1 (the process checks): Lava step k = sample, step
            self.spikes[k - 1] = out[0]
            if p.get('record_voltage'):
                self.voltages[k - 1] = self.v[0]
        self.s_out.send(out[0].transpose(2, 1, 0) if self.whc else out)   # (1, C, H, W) -> (W, H, C)
        if self.time_step == self.num_steps:
            self.fingerprint_rec.send(self.fingerprint)
            if p.get('record_steps', 0):
                self.spikes_rec.send(self.spikes)
            if p.get('record_voltage'):
                self.voltages_rec.send(self.voltages)


    def _run_stock(self, inputs):
        """One Lava step with stock NetX timing (see ``GatedLayer``; batch 1)."""
        k, p = self.time_step, self.proc_params
        if self.batch is None:
            self.batch = 1
            self._pending = np.zeros(self.u.shape)   # synaptic input of the next step
        r = p['reset_interval']
        if r and k % r == p.get('reset_phase', p['depth']) % r:
            self.u[...] = 0
            self.v[...] = 0
        if p['binary_input']:
            inputs = (inputs != 0).astype(float)
        bias = self.neuron_bias()
        if p.get('kind') == 'input':         # NetX's Input block: no synapse, no latency
            a, ops = np.trunc(inputs), 0
            bias = self.bias[min((k - 1) // self.t_max, self.bias.shape[0] - 1)][None]
        elif p.get('delay') is not None:
            a, ops = self._delayed(inputs)
        else:
            a, self._pending = self._pending, None
            self._pending, ops = self.synapse(inputs, 1)
        self.synops[0] += ops
        self.neuron_updates[0] += self.u.size
        if p.get('sdnn'):                   # sigma-delta: u = sigma, v = act, graded messages
            if getattr(self, '_residue', None) is None:
                self._residue = np.zeros(self.u.shape, np.int64)
            out = sigma_delta_step(self.u, self.v, self._residue, a, bias, self.vth,
                                   p['sdnn']).astype(float)
        else:
            spikes = lif_step(self.u, self.v, a, bias, self.du, self.dv, self.vth)
            out = spikes.astype(float)
        if k <= self.fingerprint.shape[0]:
            # sigma-delta: count and checksum of the non-zero (graded) messages
            self.fingerprint[k - 1] = fingerprint_rows(out != 0 if p.get('sdnn') else out)[0]
        if k <= p.get('record_steps', 0):
            self.spikes[k - 1] = out[0]
            if p.get('record_voltage'):
                self.voltages[k - 1] = self.v[0]
        self.s_out.send(out)
        if k == self.num_steps:
            self.fingerprint_rec.send(self.fingerprint)
            if p.get('record_steps', 0):
                self.spikes_rec.send(self.spikes)
            if p.get('record_voltage'):
                self.voltages_rec.send(self.voltages)


    def _delayed(self, inputs):
        """Dense synapse with delays (Lava's ``DelayDense``): returns the
        synaptic input of this step ``[1, No]`` and the operations; ``_buf[j]``
        holds what reaches the neurons ``j`` steps after the next one."""
        delay = self.proc_params['delay']
        if getattr(self, '_buf', None) is None:
            w = np.asarray(self.weight, dtype=float)
            self._buf = np.zeros((int(delay.max()) + 1,) + self.u.shape)
            self._by_delay = [(int(d), np.where(delay == d, w, 0.0).T) for d in np.unique(delay)]
        a = self._buf[0].copy()
        self._buf = np.roll(self._buf, -1, axis=0)
        self._buf[-1] = 0
        x = inputs.reshape(1, -1)
        for d, w_t in self._by_delay:
            self._buf[d] += x @ w_t
        return a, int((x != 0).sum()) * self.u.shape[1]


class GatedLayerPorts:
    """GatedLayer's ports and variables, for its models here and in exit_models
    (Lava's builder finds them with ``dir()``, so subclasses inherit them)."""
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    spikes_rec: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)   # per-step records (stock timing)
    spikes: np.ndarray = LavaPyType(np.ndarray, float)
    voltages_rec: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    voltages: np.ndarray = LavaPyType(np.ndarray, float)
    weight: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int64)


@implements(proc=GatedLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag('fixed_pt')
class PyGatedLayerModel(GatedLayerPorts, _GatedModel):

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.kind = proc_params['kind']
        self.stride, self.padding = proc_params['stride'], proc_params['padding']
        self._fanout, self._weights = None, None

    def receive(self):
        return self.a_in.recv()

    def neuron_bias(self):
        return self.bias.reshape((-1,) + (1,) * (self.u.ndim - 2))

    def _weight(self, a):
        """The weight in the cheapest exact dtype for input ``a``: float32 while
        every partial sum is an integer below 2**24, else float64."""
        if self._weights is None:
            w = self.weight.reshape(self.weight.shape[0], -1)
            self._wsum = float(np.abs(w).sum(axis=1).max())
            self._weights = {np.float64: self.weight, np.float32: self.weight.astype(np.float32)}
        xmax = max(float(a.max()), -float(a.min())) if a.size else 0.0
        dtype = np.float32 if self._wsum * xmax < FLOAT32_EXACT else np.float64
        return self._weights[dtype], dtype

    def synapse(self, a, n):
        a = a[:n]
        nz = a != 0
        w, dtype = self._weight(a)
        if self.kind == 'dense':
            return a.reshape(n, -1).astype(dtype) @ w.T, int(nz.sum()) * w.shape[0]
        geo = self.proc_params.get('geometry')
        if geo is not None:   # per-axis stride/padding, dilation, groups, non-square kernels
            if self._fanout is None:
                self._fanout = np.ones(w.shape)
            ops = int(conv2d_general(nz.astype(float), self._fanout, geo['stride'], geo['padding'],
                                     geo['dilation'], geo['groups']).sum())
            return conv2d_general(a, w, geo['stride'], geo['padding'], geo['dilation'],
                                  geo['groups'], dtype), ops
        if self._fanout is None:
            co, _, k, _ = w.shape
            self._fanout = conv_fanout(a.shape[2], a.shape[3], k, self.stride, self.padding, co)
        ops = int((nz.sum(axis=(0, 1)) * self._fanout).sum())
        return conv2d(a, w, self.stride, self.padding, dtype), ops


@implements(proc=GatedAttention, protocol=LoihiProtocol)
@requires(CPU)
@tag('fixed_pt')
class PyGatedAttentionModel(_GatedModel):
    q_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    k_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    v_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.heads, self.weight = proc_params['heads'], proc_params['weight']

    def receive(self):
        qkv = self.q_in.recv(), self.k_in.recv(), self.v_in.recv()
        return tuple(x.transpose(2, 1, 0)[None] for x in qkv) if self.whc else qkv

    def synapse(self, qkv, n):
        shape = (n,) + qkv[0].shape[1:]
        d = shape[1] // self.heads
        q, k, v = (x[:n].reshape(n, self.heads, d, -1) for x in qkv)  # [n, h, d, L]
        kv = k @ v.transpose(0, 1, 3, 2)                             # k^T v: [n, h, d, d]
        y = kv.transpose(0, 1, 3, 2) @ q                             # q (k^T v): [n, h, d, L]
        # event-driven operations: k_e v_d pairs per token, then q events x d
        nk, nv, nq = ((x != 0).sum(axis=2) for x in (k, v, q))      # [n, h, L]
        ops = int((nk * nv).sum() + nq.sum() * d)
        return self.weight * y.reshape(shape), ops


@implements(proc=Readout, protocol=LoihiProtocol)
@requires(CPU)
@tag('fixed_pt')
class PyReadoutModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    logits_rec: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    weight: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    acc: np.ndarray = LavaPyType(np.ndarray, float)
    logits: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.t_max, self.batch, self.num_steps = (proc_params[k] for k in
                                                  ('t_max', 'batch', 'num_steps'))
        self.offset = proc_params.get('offset', 0)

    def run_spk(self):
        x = self.a_in.recv()
        first, n, t = _window(self, self.logits.shape[0])
        if t == 0:
            self.acc[...] = 0
        self.acc += x.reshape(x.shape[0], x.shape[1], -1).sum(axis=2)
        if t == self.t_max - 1 and n:
            self.logits[first:first + n] = self.acc[:n] @ self.weight.T + self.bias
        if self.time_step == self.num_steps:
            self.logits_rec.send(self.logits)


@implements(proc=SpikeProbe, protocol=LoihiProtocol)
@requires(CPU)
@tag('fixed_pt')
class PySpikeProbeModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    fingerprint_rec: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    counts_rec: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    fingerprint: np.ndarray = LavaPyType(np.ndarray, np.int64)
    counts: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = proc_params
        self.whc, self.offset, self.period = p['layout'] == 'whc', p['offset'], p['period']
        self.t_max, self.num_samples, self.num_steps = p['t_max'], p['num_samples'], p['num_steps']

    def run_spk(self):
        x = self.a_in.recv()
        g = self.time_step - 1 - self.offset
        s, t = (g // self.period, g % self.period) if g >= 0 else (-1, -1)
        if 0 <= s < self.num_samples and t < self.t_max:
            chw = x.transpose(2, 1, 0) if self.whc else x
            self.fingerprint[s * self.t_max + t] = fingerprint_rows(chw[None])[0]
            self.counts[s] += chw.reshape(chw.shape[0], -1).sum(axis=1).astype(np.int64)
        if self.time_step == self.num_steps:
            self.fingerprint_rec.send(self.fingerprint)
            self.counts_rec.send(self.counts)
