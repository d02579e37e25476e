"""Lava processes of per-sample early exit with continuous batching
(definitions only; no side effects: Lava's compiler imports every file here).

Each of the ``B`` batch rows has its own window clock (:class:`RowClock`): the
sample it holds and its window step ``t``. Rows start with samples ``0..B-1``.
At every Lava step the readout decides, per row and with integers only, whether
the row's sample ends (margin policy: ``top1 - top2`` of the accumulated
integer logit sums ``z >= threshold``, or ``t = T_max - 1``) and sends these
``done`` flags (``[B]``, 0/1) at the beginning of the next Lava step, before it
reads its input; the input process and every layer process receive them at the
beginning of that step, before they compute. The stop message thus has a
latency of one Lava step, which is the first step of the row's next sample: a
row whose sample ended at Lava step ``g`` takes the next unassigned sample
(rows in ascending order) at step ``g + 1`` with ``t = 0``, its neuron states
and readout accumulator reset; no step is lost. Rows with no sample left stay
idle (zero input, nothing computed or counted). The step after the last sample
ends (all rows idle) is the flush step: every process sends its records.
"""
import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.variable import Var

from lava_dtss.lava_processes.process import (FrameInput, GatedAttention, GatedLayer, Readout,
                                              _record_port)


class RowClock:
    """The window clock of every batch row, advanced by the readout's ``done``
    flags; every process keeps its own copy, which stays equal because all
    apply the same flags. ``sample [B]``: sample of each row (``>= S``: idle);
    ``t [B]``: its window step."""

    def __init__(self, batch: int, num_samples: int):
        self.sample = np.arange(batch)
        self.t = np.zeros(batch, dtype=np.int64)
        self.next, self.num_samples, self.started = batch, num_samples, False

    def advance(self, done):
        """Start of a Lava step: rows flagged ``done`` at the previous step take
        the next samples (t = 0), the others move one step on (the first call
        only starts the clock)."""
        if not self.started:
            self.started = True
            return
        self.t += 1
        rows = np.flatnonzero(np.asarray(done) != 0)
        self.sample[rows] = self.next + np.arange(rows.size)
        self.next += rows.size
        self.t[rows] = 0

    @property
    def occupied(self):
        return self.sample < self.num_samples

    @property
    def idle(self) -> bool:
        return not self.occupied.any()


class ExitFrameInput(FrameInput):
    """:class:`FrameInput` whose rows follow the readout's ``done`` flags (``exit_in [B]``)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.exit_in = InPort(shape=(int(kw['batch']),))


class ExitGatedLayer(GatedLayer):
    """:class:`GatedLayer` (layer-synchronous timing) with per-row window clocks (``exit_in [B]``)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.exit_in = InPort(shape=(int(kw.get('batch', 1)),))


class ExitGatedAttention(GatedAttention):
    """:class:`GatedAttention` with per-row window clocks (``exit_in [B]``)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.exit_in = InPort(shape=(int(kw.get('batch', 1)),))


class ExitReadout(Readout):
    """:class:`Readout` that decides per row after every step: ``z = T_max * W acc
    + (t + 1) * bias`` (integers; ``acc``: the row's input summed over tokens and
    steps so far), the sample ends when ``t = T_max - 1`` or, with ``threshold``
    (an integer; ``None``: never early), when ``top1(z) - top2(z) >= threshold``.
    Sends the ``done`` flags through ``exit_out [B]`` at the next step. Records:
    ``logits [S, K]`` (``z`` at each sample's last step), ``steps [S]`` (steps it
    ran); ``progress [2]``: samples finished, 1 once the records are sent."""

    def __init__(self, *, threshold=None, **kw):
        super().__init__(**kw)
        self.proc_params['threshold'] = None if threshold is None else int(threshold)
        b, s = int(kw.get('batch', 1)), int(kw['num_samples'])
        self.exit_out = OutPort(shape=(b,))
        self.steps = Var(shape=(s,), init=0)
        self.steps_rec = _record_port((s,))
        self.progress = Var(shape=(2,), init=0)
