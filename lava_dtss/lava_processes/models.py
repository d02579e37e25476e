"""Vectorised Python process models (``fixed_pt``) of the DTSS ViT processes,
bit-accurate to Lava's Loihi 2 fixed-point LIF. Models only: no side effects."""
import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from lava_dtss.fixed_point import conv2d, conv_fanout, fingerprint, lif_step
from lava_dtss.lava_processes.process import (FrameInput, GatedAttention, GatedLayer,
                                              Readout)


def _window(model):
    """(sample index, window step t) of the current Lava time step."""
    g = model.time_step - 1
    return g // model.t_max, g % model.t_max


@implements(proc=FrameInput, protocol=LoihiProtocol)
@requires(CPU)
@tag('fixed_pt')
class PyFrameInputModel(PyLoihiProcessModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    frames: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.t_max = proc_params['t_max']

    def run_spk(self):
        s, t = _window(self)
        if s < self.frames.shape[0]:
            self.s_out.send(self.frames[s, ..., t])
        else:
            self.s_out.send(np.zeros(self.frames.shape[1:-1]))


class _GatedModel(PyLoihiProcessModel):
    """Window bookkeeping, neuron update, gating and counting."""
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
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

    def receive(self):
        raise NotImplementedError

    def synapse(self, inputs):
        """Synaptic input (integers) and the synaptic operations it took."""
        raise NotImplementedError

    def neuron_bias(self):
        return 0

    def run_spk(self):
        inputs = self.receive()
        g = self.time_step - 1
        t = g % self.t_max
        if t == 0:
            self.u[...] = 0
            self.v[...] = 0
        active = t < self.active_steps
        out = np.zeros(self.s_out.shape)
        if active or not self.gating:
            a, ops = self.synapse(inputs)
            self.synops[0] += ops
            self.neuron_updates[0] += self.u.size
            spikes = lif_step(self.u, self.v, a, self.neuron_bias(), self.du, self.dv, self.vth)
            if active:
                out = spikes.astype(float)
        if g < self.fingerprint.shape[0]:
            self.fingerprint[g] = fingerprint(out)
        self.s_out.send(out)


@implements(proc=GatedLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag('fixed_pt')
class PyGatedLayerModel(_GatedModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    weight: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.kind = proc_params['kind']
        self.stride, self.padding = proc_params['stride'], proc_params['padding']
        self._fanout = None

    def receive(self):
        return self.a_in.recv()

    def neuron_bias(self):
        return self.bias.reshape((-1,) + (1,) * (self.u.ndim - 1))

    def synapse(self, a):
        nz = a != 0
        if self.kind == 'dense':
            return self.weight @ a.reshape(-1), int(nz.sum()) * self.weight.shape[0]
        if self._fanout is None:
            co, _, k, _ = self.weight.shape
            self._fanout = conv_fanout(a.shape[1], a.shape[2], k, self.stride, self.padding, co)
        ops = int((nz * self._fanout).sum())
        return conv2d(a, self.weight, self.stride, self.padding), ops


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
        return self.q_in.recv(), self.k_in.recv(), self.v_in.recv()

    def synapse(self, qkv):
        c = qkv[0].shape[0]
        d = c // self.heads
        q, k, v = (x.reshape(self.heads, d, -1) for x in qkv)      # [h, d, L]
        kv = np.einsum('hel,hdl->hed', k, v)                      # k^T v: [h, d, d]
        y = np.einsum('hel,hed->hdl', q, kv)                      # q (k^T v): [h, d, L]
        # event-driven operations: k_e v_d pairs per token, then q events x d
        nk, nv, nq = ((x != 0).sum(axis=1) for x in (k, v, q))   # [h, L]
        ops = int((nk * nv).sum() + nq.sum() * d)
        return self.weight * y.reshape(qkv[0].shape), ops


@implements(proc=Readout, protocol=LoihiProtocol)
@requires(CPU)
@tag('fixed_pt')
class PyReadoutModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    weight: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    acc: np.ndarray = LavaPyType(np.ndarray, float)
    logits: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.t_max = proc_params['t_max']

    def run_spk(self):
        x = self.a_in.recv()
        s, t = _window(self)
        if t == 0:
            self.acc[...] = 0
        self.acc += x.reshape(x.shape[0], -1).sum(axis=1)
        if t == self.t_max - 1 and s < self.logits.shape[0]:
            self.logits[s] = self.weight @ self.acc + self.bias
