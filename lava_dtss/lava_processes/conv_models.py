"""A vectorised CPU model of Lava's standard ``Conv`` process (``lava.proc.conv``).

lava-nc 0.10.0 disables torch inside Lava processes, so its ``PyConvModelFixed``
convolves with ``scipy.signal.convolve2d`` once per (output, input) channel pair:
147,456 Python calls per step for a 384 -> 384 convolution, seconds per Lava step.
:class:`PyConvModelFixedVectorized` computes the same integers with one matrix
product per step (float64 holds every sum of 8-bit weights times graded inputs
exactly: far below 2**53) and the same 24-bit wrap (``utils.signed_clamp``);
``tests/test_loihi_build.py`` checks it against ``lava.proc.conv.utils.conv``.

It is selected for the CPU simulator only, through the run configuration's
``exception_proc_model_map`` (``lava_dtss.deploy.loihi_build``): the process
graph stays Lava's ``Conv``, which lava-loihi maps to Loihi 2 with its own models.
"""
import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.conv import utils
from lava.proc.conv.models import AbstractPyConvModel
from lava.proc.conv.process import Conv


def conv_whc(x: np.ndarray, weight: np.ndarray, stride, padding, dilation) -> np.ndarray:
    """Lava's ``utils.conv`` for one group: ``x (W, H, Ci)``, ``weight (Co, kw, kh, Ci)``
    (true convolution: the kernel is flipped), strides, paddings and dilations as
    ``(x, y)``; returns ``(Wo, Ho, Co)`` float64 (exact for integer operands)."""
    co, kw, kh, ci = weight.shape
    sx, sy = (int(v) for v in stride)
    px, py = (int(v) for v in padding)
    dx, dy = (int(v) for v in dilation)
    xp = np.pad(np.asarray(x, dtype=np.float64), ((px, px), (py, py), (0, 0)))
    ex, ey = dx * (kw - 1) + 1, dy * (kh - 1) + 1               # dilated kernel extent
    win = np.lib.stride_tricks.sliding_window_view(xp, (ex, ey), axis=(0, 1))   # (W', H', Ci, ex, ey)
    win = win[::sx, ::sy, :, ::dx, ::dy]                          # (Wo, Ho, Ci, kw, kh)
    wf = np.asarray(weight, dtype=np.float64)[:, ::-1, ::-1, :].transpose(0, 3, 1, 2)   # (Co, Ci, kw, kh)
    wo, ho = win.shape[:2]
    return (win.reshape(wo * ho, ci * kw * kh) @ wf.reshape(co, ci * kw * kh).T).reshape(wo, ho, co)


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag('fixed_pt', 'vectorized')
class PyConvModelFixedVectorized(AbstractPyConvModel):
    """Lava's ``PyConvModelFixed`` (same ports, types, one-step buffer and 24-bit
    wrap of ``a_out``), with the convolution as one matrix product per step."""
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    a_buf: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    weight: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=8)

    def run_spk(self) -> None:
        if self.a_buf is None:
            self.a_buf = np.zeros_like(self.a_out.shape)
        self.a_out.send(self.a_buf)
        s_in = self.s_in.recv()
        if self.num_message_bits.item() <= 0:
            s_in = s_in.astype(bool)
        if int(self.groups[0]) == 1:
            a = conv_whc(s_in, self.weight, self.stride, self.padding, self.dilation)
        else:
            a = utils.conv(s_in, self.weight, self.kernel_size, self.stride, self.padding, self.dilation,
                           self.groups[0])
        self.a_buf = utils.signed_clamp(a.astype(self.weight.dtype), bits=24)
