"""Python process models (``fixed_pt``) of the early-exit processes
(``exit_process``): per-row window clocks, per-row gating, reset of a row's
state when it takes a new sample. Synapses and neuron are those of
``models.py``, bit for bit. Models only: no side effects."""
import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from lava_dtss.fixed_point import fingerprint_rows
from lava_dtss.lava_processes.exit_process import (ExitFrameInput, ExitGatedAttention,
                                                   ExitGatedLayer, ExitReadout, RowClock)
from lava_dtss.lava_processes import models as _m   # the module, not its model classes (one model per process)
from lava_dtss.loihi2 import lif_step


@implements(proc=ExitFrameInput, protocol=LoihiProtocol)
@requires(CPU)
@tag('fixed_pt')
class PyExitFrameInputModel(PyLoihiProcessModel):
    exit_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    frames: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.timed, self.clock = proc_params['timed'], None

    def run_spk(self):
        done = self.exit_in.recv()
        if self.clock is None:
            self.clock = RowClock(done.shape[0], self.frames.shape[0])
            self._out = np.zeros(self.s_out.shape)
        self.clock.advance(done)
        rows = np.flatnonzero(self.clock.occupied)
        s = self.clock.sample[rows]
        self._out[...] = 0
        self._out[rows] = self.frames[s, ..., self.clock.t[rows]] if self.timed else self.frames[s]
        self.s_out.send(self._out)


class _ExitGatedModel(_m._GatedModel):
    """One Lava step of a gated layer whose rows run their own window clocks:
    rows at window step 0 start from zero state; a row computes while
    ``t < active_steps`` (``gating``) or while it holds a sample (ungated, its
    output zeroed after ``active_steps``). Fingerprints as ``_GatedModel``."""

    def run_spk(self):
        done = self.exit_in.recv()
        inputs = self.receive()
        if self.batch is None:
            self.batch = self.u.shape[0]
            self.clock = RowClock(self.batch, self.num_samples)
            self._out, self._sent = np.zeros(self.u.shape), False
        clock = self.clock
        clock.advance(done)
        occupied, t = clock.occupied, clock.t
        start = occupied & (t == 0)
        self.u[start] = 0
        self.v[start] = 0
        active = occupied & (t < self.active_steps)
        rows = np.flatnonzero(active if self.gating else occupied)
        out = self._out
        if self._sent:
            out[...] = 0
            self._sent = False
        if rows.size:
            a, ops = self.synapse(self._take(inputs, rows), rows.size)
            self.synops[0] += ops
            self.neuron_updates[0] += rows.size * (self.u.size // self.batch)
            if rows.size == self.batch:      # every row: in place, as the windowed model
                spikes = lif_step(self.u, self.v, a, self.neuron_bias(), self.du, self.dv, self.vth)
            else:
                u, v = self.u[rows], self.v[rows]
                spikes = lif_step(u, v, a, self.neuron_bias(), self.du, self.dv, self.vth)
                self.u[rows], self.v[rows] = u, v
            emit = active[rows]
            if emit.any():
                r = rows[emit]
                out[r] = spikes[emit]
                self._sent = True
                self.fingerprint[clock.sample[r] * self.t_max + t[r]] = fingerprint_rows(out[r])
        self.s_out.send(out)
        if clock.idle and not getattr(self, '_recorded', False):
            self.fingerprint_rec.send(self.fingerprint)
            self._recorded = True

    def _take(self, inputs, rows):
        if rows.size == self.batch:
            return inputs
        return tuple(x[rows] for x in inputs) if isinstance(inputs, tuple) else inputs[rows]


@implements(proc=ExitGatedLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag('fixed_pt')
class PyExitGatedLayerModel(_m.GatedLayerPorts, _ExitGatedModel):
    exit_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)   # GatedLayer's records: declared, never sent here
    receive = _m.PyGatedLayerModel.receive
    neuron_bias = _m.PyGatedLayerModel.neuron_bias
    _weight = _m.PyGatedLayerModel._weight
    synapse = _m.PyGatedLayerModel.synapse

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.kind = proc_params['kind']
        self.stride, self.padding = proc_params['stride'], proc_params['padding']
        self._fanout, self._weights = None, None


@implements(proc=ExitGatedAttention, protocol=LoihiProtocol)
@requires(CPU)
@tag('fixed_pt')
class PyExitGatedAttentionModel(_ExitGatedModel):
    exit_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    q_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    k_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    v_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    receive = _m.PyGatedAttentionModel.receive
    synapse = _m.PyGatedAttentionModel.synapse

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.heads, self.weight = proc_params['heads'], proc_params['weight']


@implements(proc=ExitReadout, protocol=LoihiProtocol)
@requires(CPU)
@tag('fixed_pt')
class PyExitReadoutModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    exit_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    logits_rec: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    steps_rec: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    weight: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    acc: np.ndarray = LavaPyType(np.ndarray, float)
    logits: np.ndarray = LavaPyType(np.ndarray, float)
    steps: np.ndarray = LavaPyType(np.ndarray, np.int64)
    progress: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.t_max, self.threshold = proc_params['t_max'], proc_params['threshold']
        self.clock = None

    def run_spk(self):
        if self.clock is None:
            self.clock = RowClock(self.acc.shape[0], self.logits.shape[0])
            self._done = np.zeros(self.acc.shape[0])
        self.exit_out.send(self._done)            # the previous step's decisions, first
        x = self.a_in.recv()
        clock = self.clock
        clock.advance(self._done)
        occupied, t = clock.occupied, clock.t
        self.acc[occupied & (t == 0)] = 0
        self.acc += x.reshape(x.shape[0], x.shape[1], -1).sum(axis=2)
        # integers (float64, exact below 2**53): T_max W acc + (t + 1) b
        z = self.t_max * (self.acc @ self.weight.T) + (t + 1)[:, None] * self.bias
        done = occupied & (t == self.t_max - 1)
        if self.threshold is not None and z.shape[1] > 1:
            top2 = np.partition(z, -2, axis=1)[:, -2:]
            done |= occupied & (top2[:, 1] - top2[:, 0] >= self.threshold)
        rows = np.flatnonzero(done)
        self.logits[clock.sample[rows]] = z[rows]
        self.steps[clock.sample[rows]] = t[rows] + 1
        self.progress[0] += rows.size
        self._done = done.astype(float)
        if clock.idle and not self.progress[1]:
            self.logits_rec.send(self.logits)
            self.steps_rec.send(self.steps)
            self.progress[1] = 1
