"""NIR interchange: NIR graphs (snnTorch, Norse, ...) to this project's NetX HDF5
with Loihi 2 integers, and our conv/dense networks to NIR. Semantics, mapping
table, refusals and measurements: ``docs/nir.md``.

Import (:func:`import_nir`) reads a *chain* ``Input -> ... -> Output`` and groups
it into layers: the linear nodes between two neurons (``Affine``/``Linear``/
``Conv2d``, with ``Flatten``, ``SumPool2d``/``AvgPool2d``, ``Scale`` and
``Identity`` folded into them exactly) form one synapse, the neuron after them
(``LIF``, ``CubaLIF``, ``IF``) the layer's CUBA-LIF. A last ``Affine``/``Linear``
followed by ``I``, ``LI``, ``CubaLI`` or directly by ``Output`` becomes the
host-side ``readout`` (the class is the argmax of the time sum of its input).

Discretisation (NIR neurons are continuous-time): a step of ``dt`` is the
forward-Euler step that snnTorch and Norse take, the input held over the step
and the voltage updated with the *new* current in the same step (Loihi's order):

    I[t] = (1 - ks) I[t-1] + ks w_in x[t]                 ks = dt / tau_syn (1: LIF, no current)
    v[t] = (1 - km) v[t-1] + km (v_leak + r I[t])         km = dt / tau_mem
    spike where v[t] > v_threshold, then v[t] = v_reset (= 0)
    IF: v[t] = v[t-1] + dt r x[t]                        (``method='exact'``: k = 1 - exp(-dt / tau))

Quantisation: decays ``round(4096 k)``; per layer one integer threshold ``V``
(``vThMant``) and per neuron a positive scale ``64 V / v_threshold`` of the
voltage (spikes do not depend on it), so that the weights are
``round(V * gain * W / v_threshold)`` with ``gain = km r (ks w_in)``; ``V`` is the
largest value with ``|w| <= 127``, ``|bias| <= 4095``, ``V < 2**17`` and no
wrap-around of the 24-bit current for any input. Images enter as
``round(inputScale * x)`` (``inputScale`` 255 by default), the first layer's
weights divided by ``inputScale``.

Export (:func:`export_nir`) writes each layer's exact parameters in NIR's
conventions for the same Euler step (``tau = 4096 dt / decay``, ``r = tau / dt``,
``w_in = tau_syn / dt``, ``v_threshold = vThMant``, ``v_leak = bias / km``: the
voltage in units of 1/64 of Loihi's state) and ``lava_dtss.*`` metadata (dt,
T_max, each threshold) with which :func:`import_nir` gives back the same integers.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from .netx_file import FORMAT, STOCK_NO_NEURON, LayerSpec, NetSpec, read_netx, write_netx

# Loihi 2's limits (lava_dtss.loihi2): decays in 1/4096 per step, 8-bit weights (symmetric), 13-bit
# bias mantissa, 17-bit threshold mantissa, |a_in| < 2**17 so that the 24-bit current cannot wrap
from ..loihi2 import DECAY_UNITY as DECAY_ONE, MAX_BIAS, MAX_CURRENT, MAX_VTH, MAX_WEIGHT
READOUT_MAX = 32767           # host-side readout weights (argmax does not depend on the scale)
DEFAULT_INPUT_SCALE = 255     # image value x in [0, 1] -> integer round(255 x) (8-bit graded input)
# datasets whose pixels are not k / 255: the scale at which every pixel is an integer (exact input)
EXACT_INPUT_SCALE = {'digits': 16}   # scikit-learn digits: 0..16, loaded as k / 16 (lava_dtss.data)
NIR_FORMAT = 'lava-dtss-nir/1'
KEY = 'lava_dtss.'            # prefix of our metadata keys in NIR graphs and nodes
METHODS = ('euler', 'exact')

LINEAR_OPS = ('Affine', 'Linear', 'Conv2d')
PASS_OPS = ('Flatten', 'SumPool2d', 'AvgPool2d', 'Scale', 'Identity')
SPIKING = ('LIF', 'CubaLIF', 'IF')
READOUT_NEURONS = ('I', 'LI', 'CubaLI')
SUPPORTED = ('Input', 'Output') + LINEAR_OPS + PASS_OPS + SPIKING + READOUT_NEURONS
REFUSED = {
    'Delay': 'the layer-synchronous runtime that runs imported networks has no delays (dense '
             'delays run only in stock NetX timing); refused rather than dropped',
    'Threshold': 'a stateless threshold has no Loihi neuron of its own; write it as LIF with '
                 'tau = dt (no memory)',
    'Conv1d': '1-D convolutions are not supported (conv layers here are 2-D)',
    'SumPool1d': '1-D pooling is not supported',
    'AvgPool1d': '1-D pooling is not supported',
    'NIRGraph': 'nested graphs (e.g. snnTorch RLeaky/RSynaptic, recurrent synapses) are not '
                'supported: this runtime runs feed-forward layers',
    'NoneType': 'the exporter wrote no node here (a module its NIR export does not know, e.g. '
                'torch.nn.Flatten in Norse 1.1.0)',
}


class NIRError(ValueError):
    """A NIR graph or network cannot be converted; the message is one line."""

    def __init__(self, msg):
        super().__init__(' '.join(str(msg).split()))


class NIRImportError(NIRError):
    """A NIR graph cannot be imported (unreadable, unsupported node, not representable)."""


class NIRImportWarning(UserWarning):
    """An imported graph that may be silent (input scale, dt): one line each."""


class NIRExportError(NIRError):
    """A network has a part that NIR cannot express."""


def _nir():
    try:
        import nir
    except ImportError:
        raise NIRError("the 'nir' package is not installed: pip install -e '.[nir]'") from None
    return nir


def _tname(node) -> str:
    return type(node).__name__


def _arr(x) -> np.ndarray:
    """float64 array of a NIR field (numpy, torch tensor, list or scalar)."""
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _pair(v, what, fail) -> tuple:
    a = np.asarray(_arr(v)).reshape(-1)
    if a.size == 1:
        a = np.repeat(a, 2)
    if a.size != 2 or np.any(a != np.round(a)):
        fail(f'{what} {a.tolist()} should be one or two whole numbers')
    return int(a[0]), int(a[1])


def _meta(md, key, default=None):
    v = (md or {}).get(KEY + key, default)
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v.item()
    return v


def step_factor(dt: float, tau: float, method: str = 'euler') -> float:
    """Fraction ``k`` of the way to the target in one step of ``dt``: ``dt / tau``
    (forward Euler, what snnTorch and Norse compute) or ``1 - exp(-dt / tau)``."""
    return dt / tau if method == 'euler' else -math.expm1(-dt / tau)


# ------------------------------------------------------------------ reading graphs
def load_graph(graph_or_path):
    """``(graph, source)``: a ``nir.NIRGraph`` as given, or read from a file
    (``nir.read`` without its type check: shapes are checked here)."""
    nir = _nir()
    if isinstance(graph_or_path, (str, os.PathLike)):
        path = os.fspath(graph_or_path)
        if not os.path.isfile(path):
            raise NIRImportError(f'{path}: no such file (expected a NIR graph written by nir.write)')
        try:
            return nir.read(path, type_check=False), path
        except Exception as e:   # h5py, KeyError, ValueError ... from inside nir: one line
            culprit = _unknown_node(path, nir)
            raise NIRImportError(f'{path}: cannot read as a NIR graph ({culprit or type(e).__name__ + ": " + str(e)[:200]})'
                                 ) from None
    if not isinstance(graph_or_path, nir.NIRGraph):
        raise NIRImportError(f'expected a nir.NIRGraph or the path of a .nir file, got '
                             f'{type(graph_or_path).__name__}')
    return graph_or_path, 'graph'


def _unknown_node(path: str, nir) -> str:
    """The first node of a NIR file whose type the installed ``nir`` does not know
    (``nir.read`` fails on it with an empty AssertionError), as a phrase; '' if none."""
    import h5py
    try:
        with h5py.File(path, 'r') as f:
            stack = [('', f['node'])]
            while stack:
                prefix, g = stack.pop()
                for name, node in g.get('nodes', {}).items():
                    t = node['type'][()] if 'type' in node else b''
                    t = t.decode() if isinstance(t, bytes) else str(t)
                    if t == 'NIRGraph':
                        stack.append((prefix + name + '.', node))
                    elif not isinstance(getattr(nir, t, None), type):
                        return (f'node {prefix + name!r} has type {t!r}, which nir {getattr(nir, "__version__", "")} '
                                f'does not know; supported here: {", ".join(SUPPORTED)}')
    except Exception:
        return ''
    return ''


def chain(graph, source: str = 'graph') -> list:
    """The nodes ``[(name, node), ...]`` from the single Input to the single
    Output; refuses, in one line, unsupported nodes, branches, joins, cycles and
    disconnected nodes."""
    def fail(msg):
        raise NIRImportError(f'{source}: {msg}')
    nodes = dict(graph.nodes)
    for name, node in nodes.items():
        t = _tname(node)
        if t not in SUPPORTED:
            fail(f'node {name!r} ({t}): ' + REFUSED.get(
                t, f'node type not supported; supported: {", ".join(SUPPORTED)}'))
    succ, pred = {n: [] for n in nodes}, {n: [] for n in nodes}
    for edge in graph.edges:
        a, b = (e.decode() if isinstance(e, bytes) else str(e) for e in edge)
        for n in (a, b):
            if n not in nodes:
                fail(f'edge {a!r} -> {b!r} names an unknown node {n!r}')
        succ[a].append(b)
        pred[b].append(a)
    ins = [n for n, v in nodes.items() if _tname(v) == 'Input']
    outs = [n for n, v in nodes.items() if _tname(v) == 'Output']
    if len(ins) != 1 or len(outs) != 1:
        fail(f'expected one Input and one Output node, found inputs {ins} and outputs {outs}')
    order, name = [], ins[0]
    while True:
        order.append(name)
        if len(pred[name]) > (0 if name == ins[0] else 1):
            loops = [p for p in pred[name] if _reaches(succ, name, p)]
            if loops:    # the braille RNNs: 'lif1.w_rec' -> 'lif1.lif' was refused as "a join"
                fail(f'node {name!r} ({_tname(nodes[name])}) has a recurrent input {loops[0]!r} (a cycle '
                     f'through its own output): recurrent graphs are not supported yet, this importer maps '
                     'feed-forward chains of layers (docs/nir.md)')
            fail(f'node {name!r} ({_tname(nodes[name])}) has {len(pred[name])} inputs {pred[name]} '
                 '(a join); this importer maps chains of layers')
        if name == outs[0]:
            break
        if len(succ[name]) != 1:
            what = 'no successor' if not succ[name] else f'{len(succ[name])} successors {succ[name]} (a branch)'
            fail(f'node {name!r} ({_tname(nodes[name])}) has {what}; this importer maps chains of layers')
        name = succ[name][0]
        if name in order:
            fail(f'node {name!r} is on a cycle; recurrent graphs are not supported')
    if succ[outs[0]]:
        fail(f'the Output node {outs[0]!r} has successors {succ[outs[0]]}')
    left = [n for n in nodes if n not in order]
    if left:
        fail(f'nodes {left} are not on the path from Input to Output')
    return [(n, nodes[n]) for n in order]


def _reaches(succ: dict, a: str, b: str) -> bool:
    """Whether node ``b`` is reachable from node ``a`` along the edges ``succ``."""
    seen, todo = set(), [a]
    while todo:
        n = todo.pop()
        if n == b:
            return True
        if n not in seen:
            seen.add(n)
            todo.extend(succ.get(n, []))
    return False


def _io_shape(node, key) -> tuple:
    t = node.input_type if key == 'input' else node.output_type
    v = (t or {}).get(key)
    return tuple(int(s) for s in _arr(v).reshape(-1)) if v is not None else ()


def _strip_batch(shape: tuple) -> tuple:
    """Drop a leading batch axis of 1 (Norse's ``to_nir``, nirtorch without
    ``ignore_dims``): ``(1, C, H, W) -> (C, H, W)``, ``(1, N) -> (N,)``."""
    while len(shape) > 3 or (len(shape) == 2 and shape[0] == 1):
        if shape[0] != 1:
            break
        shape = shape[1:]
    return shape


# ------------------------------------------------------------------ import
@dataclass
class _View:
    """What the input side of a synapse does to its source layer's output:
    pooling (factor ``k``, sum or average), elementwise scales, flattening."""
    shape0: tuple
    cur: tuple
    k: int = 1
    mult: float = 1.0
    scale: np.ndarray = None
    flat: bool = False

    def __post_init__(self):
        self.scale = np.ones(self.shape0)

    def _expand(self, s):
        """A per-position array of the current (pooled) shape on the source grid."""
        if len(self.shape0) == 1:
            return s.reshape(self.shape0)
        c, h, w = self.shape0
        s = s.reshape(self.cur if not self.flat else (c, h // self.k, w // self.k))
        full = np.ones(self.shape0)
        hp, wp = s.shape[1] * self.k, s.shape[2] * self.k
        full[:, :hp, :wp] = np.repeat(np.repeat(s, self.k, axis=1), self.k, axis=2)
        return full


@dataclass
class _Importer:
    source: str
    dt: float
    t_max: int
    method: str
    input_scale: int
    layers: list = field(default_factory=list)
    report: list = field(default_factory=list)
    forced_vth: dict = field(default_factory=dict)
    in_div: float = None      # the first synapse sees x = X / in_div (X the integer input)
    warnings: list = field(default_factory=list)   # silent-network risks (issue 26), one line each

    def is_input(self, i: int) -> bool:
        """Whether layer ``i`` is the input (possibly through flatten layers)."""
        while self.layers[i].type == 'flatten':
            i = self.layers[i].inputs[0]
        return self.layers[i].type == 'input'

    def fail(self, name, node, msg):
        where = f'node {name!r} ({_tname(node)})' if name is not None else 'graph'
        raise NIRImportError(f'{self.source}: {where}: {msg}')

    def finite(self, name, node, key, a):
        """``a`` unless it holds NaN or infinite values (they would become the integer
        -2**63 in the file); then one line naming the node and the field."""
        bad = ~np.isfinite(a)
        if np.any(bad):
            self.fail(name, node, f'{key} holds {int(bad.sum())} NaN or infinite value(s) (first at index '
                      f'{tuple(int(i) for i in np.argwhere(bad)[0])}); fix the graph (a diverged training run?)')
        return a

    # --------------------------------------------------------- input side
    def view(self, src: int, pre: list) -> _View:
        shape0 = tuple(self.layers[src].shape)
        v = _View(shape0, shape0)
        for name, node in pre:
            t = _tname(node)
            fail = lambda msg: self.fail(name, node, msg)   # noqa: E731
            if t == 'Identity':
                continue
            if t == 'Flatten':
                v.cur, v.flat = (int(np.prod(v.cur)),), True
                out = _io_shape(node, 'output')
                if out and int(np.prod(out)) != v.cur[0]:
                    fail(f'flattens to {out}, expected ({v.cur[0]},): only a full flatten is supported')
                continue
            if t in ('SumPool2d', 'AvgPool2d'):
                if v.flat or len(v.cur) != 3:
                    fail(f'pooling needs a (C, H, W) input, found {v.cur}')
                kh, kw = _pair(node.kernel_size, 'kernel_size', fail)
                sh, sw = _pair(node.stride if node.stride is not None else node.kernel_size, 'stride', fail)
                ph, pw = _pair(node.padding if node.padding is not None else 0, 'padding', fail)
                if not kh == kw == sh == sw or ph or pw:
                    fail(f'pooling with kernel {(kh, kw)}, stride {(sh, sw)}, padding {(ph, pw)}: only '
                         'square, non-overlapping pooling without padding is folded into the next synapse')
                c, h, w = v.cur
                v.k *= kh
                v.mult *= 1.0 if t == 'SumPool2d' else 1.0 / (kh * kw)
                v.cur = (c, h // kh, w // kw)
                continue
            if t == 'Scale':
                s = self.finite(name, node, 'scale', _arr(node.scale))
                if s.size == 1:
                    s = np.full(v.cur, float(s.reshape(-1)[0]))
                if s.size != int(np.prod(v.cur)):
                    fail(f'scale of shape {s.shape} does not match its input {v.cur}')
                v.scale = v.scale * v._expand(s)
                continue
            fail('unexpected node before the synapse')
        return v

    # --------------------------------------------------------- synapse
    def synapse(self, src, pre, op, post):
        """Float weights on the source layer's output and the per-output bias,
        after folding ``pre`` and ``post``: ``('dense', W [out, N], b [out], out_shape)``
        or ``('conv', w [Co, Ci, k, k], b [Co], out_shape, stride, padding)``."""
        name, node = op
        t = _tname(node)
        fail = lambda msg: self.fail(name, node, msg)   # noqa: E731
        v = self.view(src, pre)
        if t in ('Affine', 'Linear'):
            W = self.finite(name, node, 'weight', _arr(node.weight))
            if W.ndim != 2:
                fail(f'weight of shape {W.shape}: expected [out, in]')
            if W.shape[1] != int(np.prod(v.cur)):
                fail(f'weight {W.shape} does not match its input {v.cur} ({int(np.prod(v.cur))} values)')
            b = _arr(node.bias).reshape(-1) if t == 'Affine' and node.bias is not None else np.zeros(W.shape[0])
            self.finite(name, node, 'bias', b)
            if b.size == 1 and W.shape[0] > 1:
                b = np.full(W.shape[0], float(b[0]))
            if b.shape != (W.shape[0],):
                fail(f'bias of shape {b.shape}: expected ({W.shape[0]},)')
            if len(v.shape0) == 3:
                c, h, w = v.shape0
                hp, wp = h // v.k, w // v.k
                W3 = np.zeros((W.shape[0], c, h, w))
                W3[:, :, :hp * v.k, :wp * v.k] = v.mult * np.repeat(np.repeat(
                    W.reshape(W.shape[0], c, hp, wp), v.k, axis=2), v.k, axis=3)
                W = W3.reshape(W.shape[0], -1)
            out = (W.shape[0],)
            syn = ['dense', W * v.scale.reshape(1, -1), b, out]
        else:   # Conv2d
            if v.flat or len(v.cur) != 3:
                fail(f'a convolution needs a (C, H, W) input, found {v.cur}')
            w = self.finite(name, node, 'weight', _arr(node.weight))
            if w.ndim != 4 or w.shape[2] != w.shape[3]:
                fail(f'weight of shape {w.shape}: expected [Co, Ci, k, k] (square kernels only)')
            groups = getattr(node, 'groups', None)
            groups = 1 if groups is None else int(_arr(groups).reshape(-1)[0])
            dil = getattr(node, 'dilation', None)
            dil = _pair(1 if dil is None else dil, 'dilation', fail)
            st = _pair(node.stride, 'stride', fail)
            k = w.shape[2]
            pad = node.padding
            if isinstance(pad, (str, bytes)):
                pad = pad.decode() if isinstance(pad, bytes) else pad
                if pad == 'valid':
                    pad = 0
                elif pad == 'same' and k % 2 == 1 and st == (1, 1):
                    pad = k // 2
                else:
                    fail(f'padding {pad!r} with kernel {k} and stride {st} is not supported')
            pad = _pair(pad, 'padding', fail)
            if groups != 1 or dil != (1, 1) or st[0] != st[1] or pad[0] != pad[1]:
                fail(f'conv geometry (groups {groups}, dilation {dil}, stride {st}, padding {pad}): this '
                     "project's files and Loihi build take square kernels with one stride and padding, "
                     'no dilation or groups')
            if w.shape[1] != v.cur[0]:
                fail(f'weight {w.shape} expects {w.shape[1]} input channels, found {v.cur}')
            c, h, wd = v.shape0
            if v.k > 1 and (h % v.k or wd % v.k):
                fail(f'pooling by {v.k} of a {h}x{wd} map drops rows or columns; a pooled input to a '
                     'convolution is folded only when the pooling divides the map')
            s = v.scale
            if np.any(np.abs(s - s[:, :1, :1]) > 1e-12 * np.abs(s).max()):
                fail('an elementwise Scale that varies over positions before a convolution cannot be '
                     'folded into its shared kernel')
            wk = v.mult * np.repeat(np.repeat(w, v.k, axis=2), v.k, axis=3) * s[None, :, 0, 0, None, None]
            stride, padding = st[0] * v.k, pad[0] * v.k
            kk = wk.shape[2]
            out = (w.shape[0], (h + 2 * padding - kk) // stride + 1, (wd + 2 * padding - kk) // stride + 1)
            if min(out) < 1:
                fail(f'the convolution of {v.cur} gives an empty output {out}')
            b = _arr(node.bias).reshape(-1) if getattr(node, 'bias', None) is not None else np.zeros(w.shape[0])
            self.finite(name, node, 'bias', b)
            if b.size == 1 and w.shape[0] > 1:
                b = np.full(w.shape[0], float(b[0]))
            if b.shape != (w.shape[0],):
                fail(f'bias of shape {b.shape}: expected ({w.shape[0]},)')
            syn = ['conv', wk, b, out, stride, padding]
        flatten_after = False
        for pname, pnode in post:
            pt = _tname(pnode)
            if pt == 'Identity':
                continue
            if pt == 'Scale':
                s = self.finite(pname, pnode, 'scale', _arr(pnode.scale))
                s = np.full(syn[3], float(s.reshape(-1)[0])) if s.size == 1 else s.reshape(syn[3])
                rows = self._per_row(pname, pnode, 'scale', s, syn[3])
                syn[1] = syn[1] * rows.reshape((-1,) + (1,) * (syn[1].ndim - 1))
                syn[2] = syn[2] * rows
            elif pt == 'Flatten':
                flatten_after = True
            else:
                self.fail(pname, pnode, 'only Scale, Flatten or Identity may follow a synapse before its neuron')
        return syn, flatten_after

    def _per_row(self, name, node, what, a, shape):
        """Per output row (dense: neuron; conv: channel) of a field of the layer's
        shape; a conv field must not vary over positions."""
        a = np.broadcast_to(a, shape) if a.size == 1 else a.reshape(shape)
        if len(shape) == 3:
            first = a[:, :1, :1]
            if np.any(np.abs(a - first) > 1e-6 * max(1e-30, float(np.abs(a).max()))):
                self.fail(name, node, f'{what} varies over the positions of a channel; a conv layer '
                          'shares one value per channel')
            return first.reshape(-1).astype(np.float64)
        return a.reshape(-1).astype(np.float64)

    # --------------------------------------------------------- neuron
    def _field(self, name, node, key, shape, default=None):
        val = getattr(node, key, None)
        if val is None:
            if default is None:
                self.fail(name, node, f'missing field {key}')
            val = default
        a = self.finite(name, node, key, _arr(val))
        if a.size == 1:
            a = np.full(shape, float(a.reshape(-1)[0]))
        if a.size != int(np.prod(shape)):
            self.fail(name, node, f'{key} has shape {a.shape}, expected the layer shape {shape} or one value')
        return a.reshape(shape)

    def _tau(self, name, node, key, shape):
        tau = self._field(name, node, key, shape)
        if not np.all(np.isfinite(tau)) or np.any(tau <= 0):
            self.fail(name, node, f'{key} must be finite and positive, found {tau.min():g}..{tau.max():g}')
        lo, hi = float(tau.min()), float(tau.max())
        if hi - lo > 1e-6 * hi:
            self.fail(name, node, f'per-neuron time constants ({key} from {lo:g} to {hi:g}): Loihi 2 '
                      'layers here have one decay per layer')
        k = step_factor(self.dt, hi, self.method)
        if k > 1:
            self.fail(name, node, f'dt / {key} = {self.dt / hi:g} > 1: the Euler step is unstable and '
                      "Loihi's decay is at most 4096/4096 per step; use a smaller dt or method 'exact'")
        return k, hi

    def neuron(self, name, node, shape):
        """``(gain per row, bias terms, iDecay, vDecay, threshold per row, info)``:
        the synaptic drive reaches the voltage scaled by ``gain``; ``leak`` is the
        constant drive ``km v_leak`` per step."""
        t = _tname(node)
        info = {'node': name, 'type': t}
        theta = self._field(name, node, 'v_threshold', shape)
        reset = self._field(name, node, 'v_reset', shape, default=0.0)
        if np.any(reset != 0):
            self.fail(name, node, f'v_reset = {float(np.abs(reset).max()):g}: Loihi resets the voltage to 0 '
                      '(reset to a non-zero value is not representable)')
        if np.any(theta <= 0) or not np.all(np.isfinite(theta)):
            self.fail(name, node, 'v_threshold must be positive and finite (Loihi spikes when v exceeds a '
                      'positive threshold)')
        r = self._field(name, node, 'r', shape)
        if t == 'IF':
            km, ks = 0.0, 1.0
            gain = self.dt * r
            leak = np.zeros(shape)
            info.update(dt_r=float(np.abs(gain).max()))
        else:
            km, tau_m = self._tau(name, node, 'tau' if t == 'LIF' else 'tau_mem', shape)
            leak = km * self._field(name, node, 'v_leak', shape, default=0.0)
            gain = km * r
            ks = 1.0
            info.update(tau_mem=tau_m, km=km)
            if t == 'CubaLIF':
                ks, tau_s = self._tau(name, node, 'tau_syn', shape)
                gain = gain * ks * self._field(name, node, 'w_in', shape, default=1.0)
                info.update(tau_syn=tau_s, ks=ks)
        return dict(gain=gain, leak=leak, theta=theta, km=km, ks=ks, info=info)

    # --------------------------------------------------------- quantisation
    def quantise(self, name, node, W, b, nrn, src_is_input, shape):
        """Integers of one layer; returns ``(weight, bias, neuron dict, report)``."""
        rows = W.shape[0]
        g = self._per_row(name, node, 'r (and w_in)', nrn['gain'], shape)
        th = self._per_row(name, node, 'v_threshold', nrn['theta'], shape)
        leak = self._per_row(name, node, 'v_leak', nrn['leak'], shape)
        ks, km = nrn['ks'], nrn['km']
        if ks < 1 and np.any(b != 0):
            self.fail(name, node, 'an Affine/Conv2d bias into a CubaLIF with a synaptic time constant: '
                      'Loihi adds its bias to the voltage, not to the current, so the current\'s rise '
                      'would be lost; use a bias-free synapse or carry a constant drive in v_leak')
        s_in = float(self.in_div) if src_is_input else 1.0
        x_max = float(self.input_scale) if src_is_input else 1.0
        what = W.reshape(rows, -1) * (g / th / s_in)[:, None]
        bhat = (g * b + leak) / th
        di = int(round(DECAY_ONE * ks))
        dv = int(round(DECAY_ONE * km))
        ks_eff = di / DECAY_ONE

        def ints(V):
            return np.round(V * what).astype(np.int64), np.round(V * bhat).astype(np.int64)

        def fits(V, strict):
            w, bb = ints(V)
            ok = np.abs(w).max(initial=0) <= MAX_WEIGHT and np.abs(bb).max(initial=0) <= MAX_BIAS
            if strict:
                ok = ok and np.abs(w).sum(axis=1).max(initial=0) * x_max * (1.0 / max(ks_eff, 1e-12)) < MAX_CURRENT
            return ok

        forced = self.forced_vth.get(name)
        if forced is not None and 1 <= forced <= MAX_VTH and fits(forced, False):
            V = int(forced)
        else:
            cand = [float(MAX_VTH)]
            amax, bmax = float(np.abs(what).max(initial=0)), float(np.abs(bhat).max(initial=0))
            if amax > 0:
                cand.append((MAX_WEIGHT + 0.49) / amax)
            if bmax > 0:
                cand.append((MAX_BIAS + 0.49) / bmax)
            rowsum = float(np.abs(what).sum(axis=1).max(initial=0))
            if rowsum > 0:
                cand.append(MAX_CURRENT * max(ks_eff, 1e-12) / (x_max * rowsum) * 0.999)
            V = int(math.floor(min(cand)))
            while V >= 1 and not fits(V, True):
                V = int(V * 0.99) if V > 100 else V - 1
            if V < 1:
                self.fail(name, node, 'no integer threshold fits: the weights, bias and threshold cannot '
                          'share 8-bit weights, a 13-bit bias and a 17-bit threshold')
        w, bias = ints(V)
        w = w.reshape(W.shape)
        rep = dict(nrn['info'], vThMant=V, iDecay=di, vDecay=dv,
                   weight_max=int(np.abs(w).max(initial=0)),
                   weight_lsb_of_threshold=1.0 / V,
                   weight_rounding_max=float(np.abs(w.reshape(rows, -1) - V * what).max(initial=0)),
                   bias_rounding_max=float(np.abs(bias - V * bhat).max(initial=0)),
                   decay_error_syn=abs((1 - di / DECAY_ONE) - (1 - ks)),
                   decay_error_mem=abs((1 - dv / DECAY_ONE) - (1 - km)),
                   worst_current=int(np.abs(w).sum(axis=1).max(initial=0) * x_max),
                   weight_bits_used=int(np.abs(w).max(initial=0)).bit_length() + 1)
        if src_is_input:
            rep['input_scale'] = int(self.input_scale)
        # the worst drift of the voltage from the float graph's, in thresholds, after T_max steps of
        # inputs at their maximum: the rounding of every weight adds up; a leak (km) forgets it, an IF
        # (vDecay 0) never does (issue 26, pitfall 4)
        per_step = float(np.abs(w.reshape(rows, -1) - V * what).sum(axis=1).max(initial=0)) * x_max
        per_step += float(np.abs(bias - V * bhat).max(initial=0))
        keep = sum((1 - dv / DECAY_ONE) ** t for t in range(self.t_max))
        rep['fixed_point_error_of_threshold'] = per_step * keep / V
        rep['steps_to_threshold'] = _steps_to_threshold(w.reshape(rows, -1), bias, di, dv, V, x_max, self.t_max)
        self._silence_warnings(name, rep, ks, km, di, dv, V)
        neuron = {'type': 'CUBA', 'iDecay': di, 'vDecay': dv, 'vThMant': V, 'refDelay': 1,
                  'gradedSpike': False}
        return w, bias, neuron, rep

    def _silence_warnings(self, name, rep, ks, km, di, dv, V):
        """One line per silent-network risk of a layer (issue 26): decays that the
        12-bit field cannot hold for this ``dt``, and a threshold that no neuron
        reaches within ``T_max`` steps even with every input at its maximum."""
        where = f'node {name!r} (dt {self.dt:g})'
        for what, k, d in (('membrane', km, dv), ('synaptic', ks, di)):
            if k > 0 and (d == 0 or abs(d / DECAY_ONE - k) > 0.1 * k):
                self.warnings.append(f'{where}: the {what} decay dt/tau = {k:.3g} becomes {d}/{DECAY_ONE} per '
                                     f'step ({abs(d / DECAY_ONE - k) / k:.0%} off): dt is too small for this '
                                     "graph's time constants; see docs/nir.md for the writer's dt")
        if rep['steps_to_threshold'] is None:
            self.warnings.append(f'{where}: no neuron reaches its threshold (vThMant {V}, weights of at most '
                                 f'{rep["weight_max"]}) within {self.t_max} steps even with every input at its '
                                 'maximum: the layer stays silent; check --dt (docs/nir.md: the dt rule of '
                                 'each writer) and --input-scale')


def _steps_to_threshold(w, bias, di, dv, V, x_max, t_max):
    """The first step (1-based) at which some neuron of a layer can exceed its
    threshold ``V`` when every input is at its most exciting (``x_max`` where its
    weight is positive, 0 elsewhere), in the integers of the file; None if none
    does within ``t_max`` steps (the layer cannot spike)."""
    drive = np.clip(w, 0, None).sum(axis=1).astype(np.float64) * x_max
    u = np.zeros_like(drive)
    v = np.zeros_like(drive)
    b = np.asarray(bias, np.float64).reshape(-1)
    b = np.broadcast_to(b, drive.shape) if b.size in (1, drive.size) else np.full(drive.shape, float(b.max()))
    for t in range(1, t_max + 1):
        u = u * (1 - di / DECAY_ONE) + drive
        v = v * (1 - dv / DECAY_ONE) + u + b
        if np.any(v > V):
            return t
    return None


def _split(imp, pending, end_name, end_node):
    ops = [i for i, (_, n) in enumerate(pending) if _tname(n) in LINEAR_OPS]
    if not ops:
        imp.fail(end_name, end_node, 'needs a synapse (Affine, Linear or Conv2d) between it and the '
                                     'previous layer')
    if len(ops) > 1:
        a, b = (pending[i][0] for i in ops[:2])
        imp.fail(end_name, end_node, f'two synapses {a!r} and {b!r} without a neuron between them: '
                                     'not one Loihi synapse')
    i = ops[0]
    return pending[:i], pending[i], pending[i + 1:]


def import_nir(graph_or_path, dt: float = None, steps: int = None, *, dataset: str = None,
               input_scale: int = None, method: str = 'euler', out: str = None,
               command: str = '') -> NetSpec:
    """A NIR chain as a network of this project (``NetSpec``, our format, no DTSS
    gates), written to ``out`` when given.

    ``dt``: the time step in the graph's time unit (snnTorch writes ``tau`` for
    dt = 1e-4; Norse 1.1.0 writes ``tau = dt / tau_inv``, consistent with
    dt = 1e-6 for its default 1e-3, norse/norse#411); ``steps``: time steps per
    sample (``T_max``). Both default to the graph's ``lava_dtss.*`` metadata (our
    export). ``dataset``: stored in the file for ``run_lava.py``; a flat input of
    as many values as the dataset's images gets the image shape and a flatten
    layer. ``input_scale``: image value ``x`` in [0, 1] -> integer
    ``round(input_scale * x)`` (default: the scale at which the dataset's pixels
    are integers, 16 for digits, else 255). Raises :class:`NIRImportError`
    (one line) for anything it cannot map exactly as documented."""
    graph, source = load_graph(graph_or_path)
    gmeta = getattr(graph, 'metadata', None) or {}
    dt = dt if dt is not None else _meta(gmeta, 'dt')
    steps = steps if steps is not None else _meta(gmeta, 't_max')
    if dt is None or not float(dt) > 0 or not math.isfinite(float(dt)):
        raise NIRImportError(f'{source}: the time step dt is needed (NIR graphs do not store it): e.g. '
                             '1e-4 for snnTorch, 1e-6 for Norse 1.1.0 (see docs/nir.md)' if dt is None else
                             f'{source}: dt must be a positive number, got {dt!r}')
    if steps is None or isinstance(steps, bool) or int(steps) != steps or not 1 <= int(steps) <= 1 << 16:
        raise NIRImportError(f'{source}: the number of time steps per sample (steps, 1..65536) is needed, '
                             f'got {steps!r}')
    if method not in METHODS:
        raise NIRImportError(f"{source}: method {method!r}: expected 'euler' or 'exact'")
    nodes = chain(graph, source)
    imp = _Importer(source, float(dt), int(steps), method, DEFAULT_INPUT_SCALE)
    first_name, first = nodes[0]
    in_shape = _strip_batch(_io_shape(first, 'input') or _io_shape(first, 'output'))
    if not in_shape or any(s < 1 for s in in_shape):
        imp.fail(first_name, first, f'input shape {in_shape} is missing or not positive')
    # an input Scale written by our export is the input scale, not a weight factor
    pending_start = 1
    if (len(nodes) > 1 and _tname(nodes[1][1]) == 'Scale'
            and _meta(nodes[1][1].metadata, 'inputScale') and input_scale is None):
        s = _arr(nodes[1][1].scale).reshape(-1)
        if np.all(s == s[0]) and s[0] == round(s[0]) and 1 <= s[0] <= 1 << 16:
            input_scale = int(s[0])
            pending_start = 2
    if input_scale is None and dataset is not None and pending_start == 1:
        input_scale = EXACT_INPUT_SCALE.get(dataset, DEFAULT_INPUT_SCALE)
    scale_default = input_scale is None
    if input_scale is not None:
        if isinstance(input_scale, bool) or int(input_scale) != input_scale or not 1 <= int(input_scale) <= 1 << 16:
            raise NIRImportError(f'{source}: input_scale must be a whole number in 1..65536, got {input_scale!r}')
        imp.input_scale = int(input_scale)
    # the graph's first synapse sees x in [0, 1] (X / input_scale), or X itself after our input Scale
    imp.in_div = 1.0 if pending_start == 2 else float(imp.input_scale)
    for name, node in nodes:
        v = _meta(getattr(node, 'metadata', None), 'vThMant')
        if v is not None:
            imp.forced_vth[name] = int(v)
    file_shape = in_shape
    if dataset is not None:
        from ..training.data import dataset_info
        try:
            img = tuple(dataset_info(dataset).image_shape)
        except ValueError as e:
            raise NIRImportError(f'{source}: {e}') from None
        if int(np.prod(img)) != int(np.prod(in_shape)) or (len(in_shape) == 3 and in_shape != img):
            imp.fail(first_name, first, f'input shape {in_shape} does not match {dataset} images {img}')
        file_shape = img
    layers = imp.layers
    layers.append(LayerSpec(type='input', name='input', shape=tuple(file_shape),
                            params={'inputScale': imp.input_scale}))
    src = 0
    if file_shape != in_shape:   # flat graph input, image-shaped data: flatten in C, H, W order
        layers.append(LayerSpec(type='flatten', name='input.flatten', shape=(int(np.prod(in_shape)),),
                                inputs=[0]))
        src = 1
    pending = []
    readout_done = False
    for name, node in nodes[pending_start:]:
        t = _tname(node)
        if readout_done and t != 'Output':
            imp.fail(name, node, 'nothing may follow the readout (I, LI or CubaLI) but the Output')
        if t in LINEAR_OPS or t in PASS_OPS:
            pending.append((name, node))
            continue
        if t in SPIKING:
            src = _add_layer(imp, src, pending, name, node)
            pending = []
            continue
        if t in READOUT_NEURONS:
            _add_readout(imp, src, pending, name, node)
            pending, readout_done = [], True
            continue
        # Output
        if any(_tname(n) in LINEAR_OPS for _, n in pending):
            _add_readout(imp, src, pending, None, None)
        elif any(_tname(n) not in ('Flatten', 'Identity') for _, n in pending):
            bad = next((n, x) for n, x in pending if _tname(x) not in ('Flatten', 'Identity'))
            imp.fail(bad[0], bad[1], 'after the last neuron only a synapse (a readout) or Flatten may come')
        out_shape = _strip_batch(_io_shape(node, 'output') or _io_shape(node, 'input'))
        last = layers[-1]
        n_last = int(np.prod(last.shape)) if last.type != 'readout' else last.shape[0]
        if out_shape and int(np.prod(out_shape)) != n_last:
            imp.fail(name, node, f'output shape {out_shape} does not match the last layer {tuple(last.shape)}')
    if not any(l.type in ('conv', 'dense') for l in layers):
        raise NIRImportError(f'{source}: the graph has no spiking layer (LIF, CubaLIF or IF)')
    if scale_default:
        imp.warnings.insert(0, f'input scale {imp.input_scale} (the default): data x in [0, 1] enter as '
                               f'round({imp.input_scale} x); spike or event input (0/1) would count 1/'
                               f'{imp.input_scale} per event and silence the network: for such input '
                               'import with --input-scale 1')
    import warnings as _w
    for line in imp.warnings:
        _w.warn(line, NIRImportWarning, stacklevel=2)
    meta = {'format': FORMAT, 'dtss': 0, 't_max': int(steps), 'dataset': dataset or '',
            'command': command or 'lava_dtss.nir_interchange.import_nir',
            'nir': json.dumps({'source': source if source != 'graph' else '(in-memory graph)',
                               'dt': float(dt), 'method': method, 'input_scale': imp.input_scale,
                               'layers': imp.report, 'warnings': imp.warnings}, default=float)}
    spec = NetSpec(layers=layers, meta=meta)
    if out is not None:     # written and read back beside out, renamed only when valid (issue 26)
        folder = os.path.dirname(os.path.abspath(out))
        tmp = os.path.join(folder, f'.{os.path.basename(out)}.{os.getpid()}.check')
        try:
            write_netx(spec, tmp)
            try:
                back = read_netx(tmp)       # what run_lava.py will see, validated
            except ValueError as e:
                raise NIRImportError(f'{source}: the imported network fails its own check, nothing written '
                                     f'to {out} ({str(e).replace(tmp, out)})') from None
            os.replace(tmp, out)
        except OSError as e:
            msg = e.strerror or str(e)
            raise OSError(e.errno, msg if msg.startswith('cannot write') else
                          f'cannot write the network file ({msg})', out) from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return back
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:   # the same validated form without a file to keep
        path = os.path.join(tmp, 'imported.net')
        write_netx(spec, path)
        return read_netx(path)


def _layer_name(imp: _Importer, base: str) -> str:
    """A layer name the file can hold (ASCII, 32 bytes) and no other layer has
    (the runtime keys its records by name)."""
    base = ''.join(c if c.isascii() and (c.isalnum() or c in '._-') else '_' for c in base)[:32]
    taken = {l.name for l in imp.layers}
    name, i = base, 1
    while name in taken:
        suffix = f'~{i}'
        name, i = base[:32 - len(suffix)] + suffix, i + 1
    return name


def _add_layer(imp: _Importer, src: int, pending: list, name, node) -> int:
    pre, op, post = _split(imp, pending, name, node)
    syn, flatten_after = imp.synapse(src, pre, op, post)
    kind, W, b, out = syn[:4]
    src_is_input = imp.is_input(src)
    nrn = imp.neuron(name, node, out)
    w, bias, neuron, rep = imp.quantise(name, node, W, b, nrn, src_is_input, out)
    rep['synapse'] = op[0]
    from .export import conv_spec, dense_spec
    lname = _layer_name(imp, f'nir.{name}')
    if kind == 'dense':
        inputs = [src]
        if len(imp.layers[src].shape) == 3:      # dense on a (C, H, W) map: NetX wants a flatten layer
            imp.layers.append(LayerSpec(type='flatten', name=_layer_name(imp, f'{lname}.flatten'),
                                        shape=(int(np.prod(imp.layers[src].shape)),), inputs=[src]))
            inputs = [len(imp.layers) - 1]
        spec = dense_spec(lname, w, bias, neuron, inputs=inputs)
    else:
        stride, padding = syn[4], syn[5]
        spec = conv_spec(lname, w, bias, out, neuron, stride=stride, padding=padding, inputs=[src])
    imp.layers.append(spec)
    rep['layer'] = lname
    imp.report.append(rep)
    if flatten_after:
        imp.layers.append(LayerSpec(type='flatten', name=_layer_name(imp, f'{lname}.flat'),
                                    shape=(int(np.prod(out)),), inputs=[len(imp.layers) - 1]))
    return len(imp.layers) - 1


def _add_readout(imp: _Importer, src: int, pending: list, name, node):
    """Host-side readout: ``logits = W' (sum over steps and positions of the
    source's spikes) + T b'`` with the gain of the readout neuron folded in."""
    end_name, end_node = (name, node) if node is not None else (pending[-1][0], pending[-1][1])
    pre, op, post = _split(imp, pending, end_name, end_node)
    oname, onode = op
    if _tname(onode) == 'Conv2d':
        imp.fail(oname, onode, 'a convolution as readout is not supported (use Affine/Linear)')
    src_is_input = imp.is_input(src)
    while imp.layers[src].type == 'flatten':   # the readout sums over the positions of its source map
        src = imp.layers[src].inputs[0]
    v = imp.view(src, pre)
    W = imp.finite(oname, onode, 'weight', _arr(onode.weight))
    if W.ndim != 2 or W.shape[1] != int(np.prod(v.cur)):
        imp.fail(oname, onode, f'weight of shape {W.shape} does not match its input {v.cur}')
    b = _arr(onode.bias).reshape(-1) if _tname(onode) == 'Affine' and onode.bias is not None else np.zeros(W.shape[0])
    b = np.broadcast_to(imp.finite(oname, onode, 'bias', b), (W.shape[0],)).astype(np.float64)
    if len(v.shape0) == 3:
        c, h, w = v.shape0
        if v.k != h or v.k != w:
            imp.fail(oname, onode, f'a readout from a {v.shape0} map needs a global SumPool2d/AvgPool2d '
                     'before it (the readout sums over positions)')
        s = v.scale
        if np.any(np.abs(s - s[:, :1, :1]) > 1e-12 * np.abs(s).max()):
            imp.fail(oname, onode, 'a Scale that varies over positions before a pooled readout')
        W = v.mult * W * s[:, 0, 0][None, :]
    else:
        W = W * v.scale.reshape(1, -1)
    for pname, pnode in post:
        if _tname(pnode) == 'Scale':
            s = np.broadcast_to(imp.finite(pname, pnode, 'scale', _arr(pnode.scale)).reshape(-1), (W.shape[0],))
            W, b = W * s[:, None], b * s
        elif _tname(pnode) not in ('Identity', 'Flatten'):
            imp.fail(pname, pnode, 'only Scale, Flatten or Identity may follow the readout synapse')
    shape = (W.shape[0],)
    exact, gain, leak = True, np.ones(shape), np.zeros(shape)
    info = {'node': name, 'type': _tname(node) if node is not None else 'none', 'synapse': oname}
    if node is not None:
        t = _tname(node)
        r = imp._field(name, node, 'r', shape)
        if t == 'I':
            gain = imp.dt * r
        else:
            km, tau = imp._tau(name, node, 'tau' if t == 'LI' else 'tau_mem', shape)
            gain = km * r
            leak = km * imp._field(name, node, 'v_leak', shape, default=0.0)
            info.update(tau_mem=tau, km=km)
            if t == 'CubaLI':
                ks, tau_s = imp._tau(name, node, 'tau_syn', shape)
                gain = gain * ks * imp._field(name, node, 'w_in', shape, default=1.0)
                info.update(tau_syn=tau_s, ks=ks)
            exact = False
    if np.any(gain <= 0):
        imp.fail(name, node, 'the readout gain (r, w_in) must be positive')
    Wf = W * (gain / (imp.in_div if src_is_input else 1.0))[:, None]
    bf = imp.t_max * (gain * b + leak)
    keep = node is not None and _meta(node.metadata, 'readout') and np.allclose(Wf, np.round(Wf), atol=1e-6)
    f = 1.0 if keep else READOUT_MAX / max(float(np.abs(Wf).max()), 1e-300)
    wi, bi = np.round(f * Wf).astype(np.int64), np.round(f * bf).astype(np.int64)
    info.update(exact=exact, scale=f, readout=('time sum of the input (exact)' if exact else
                'time sum of the input; the leak of the LI voltage (weights (1-km)^(T-1-t)) is not kept'))
    imp.layers.append(LayerSpec(type='readout', name=_layer_name(imp, f'nir.{name or oname}.readout'), shape=shape,
                                inputs=[src], params={'weight': wi, 'bias': bi}))
    imp.report.append(info)


# ------------------------------------------------------------------ export
def _spec_of(source):
    if isinstance(source, NetSpec):
        return source, 'network'
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return read_netx(path), path
    from ..model import SpikingViT
    if isinstance(source, SpikingViT):
        from .export import model_to_spec
        return model_to_spec(source), 'model'
    raise NIRExportError(f'expected a NetSpec, a network file or a SpikingViT, got {type(source).__name__}')


def export_nir(source, dt: float = 1e-3, t_max: int = None):
    """The NIR graph of a network (``NetSpec``, a NetX file, or a ``SpikingViT``):
    input, conv, dense, flatten, CUBA-LIF layers and the readout, in NIR's
    conventions for the Euler step of ``dt`` (module docstring). Refuses, naming
    the layer, what NIR cannot express: spiking attention, DTSS gates that cut
    steps, residual sums, synaptic delays, neurons without a decaying voltage and
    current (see docs/nir.md)."""
    nir = _nir()
    spec, where = _spec_of(source)
    if not float(dt) > 0:
        raise NIRExportError(f'dt must be positive, got {dt!r}')
    t_max = t_max or spec.t_max
    nodes, edges = {}, []
    names = {}

    def fail(i, layer, msg):
        raise NIRExportError(f'{where}: layer {i} ({layer.type} {layer.name!r}): {msg}')

    def add(name, node, prev):
        name = name.replace('/', '_')
        while name in nodes:
            name += '_'
        nodes[name] = node
        if prev is not None:
            edges.append((prev, name))
        return name

    for i, layer in enumerate(spec.layers):   # the fundamental refusal first
        if layer.type == 'attention':
            fail(i, layer, 'spiking self-attention q (k^T v) multiplies two spike trains; NIR has no '
                           'primitive for it')
    for i, layer in enumerate(spec.layers):
        if layer.neuron.get('type') == 'SDNN':
            fail(i, layer, 'sigma-delta (SDNN) neurons are not exported to NIR (this exporter writes '
                           'CUBA-LIF networks)')
        if layer.active_steps is not None and t_max and layer.active_steps < t_max:
            fail(i, layer, f'DTSS gate (active {layer.active_steps} of {t_max} steps): NIR has no time-step '
                           'gate; a NIR reader would run the layer for every step')
        if i > 0 and len(layer.inputs) != 1:
            fail(i, layer, f'sums {len(layer.inputs)} inputs (a residual); this exporter writes chains')
        if 'delay' in layer.params:
            fail(i, layer, 'synaptic delays [out, in] have no NIR node (NIR Delay delays a signal, '
                           'not one synapse)')
        if layer.type in ('conv', 'dense') and layer.neuron == STOCK_NO_NEURON:
            fail(i, layer, "a dense layer without neuron (NetX's non-spiking default) has no NIR node")
        if layer.type == 'input' and layer.neuron:
            fail(i, layer, 'an input layer with a neuron (SLAYER Input block, driven by its bias) is not '
                           'exported: this exporter writes the input as data (read the file with '
                           'skip_input_neuron=True to export the rest)')
    prev, shape = None, {}
    for i, layer in enumerate(spec.layers):
        src = layer.inputs[0] if i else None
        if layer.type == 'input':
            shape[i] = tuple(layer.shape)
            prev = add('input', nir.Input(input_type={'input': np.array(layer.shape)}), None)
            s = int(layer.params.get('inputScale', 1))   # also 1: it tells the importer the scale
            prev = add('input_scale', nir.Scale(scale=np.full(layer.shape, float(s)),
                                                metadata={KEY + 'inputScale': 1}), prev)
            names[i] = prev
            continue
        in_shape = shape[src]
        if layer.type == 'flatten':
            shape[i] = (int(np.prod(in_shape)),)
            prev = add(layer.name, nir.Flatten(input_type={'input': np.array(in_shape)}, start_dim=0,
                                               end_dim=-1), prev)
            names[i] = prev
            continue
        if layer.type == 'readout':
            w, b = np.asarray(layer.params['weight'], float), np.asarray(layer.params['bias'], float)
            if not t_max:
                fail(i, layer, 'the readout needs T_max (pass t_max)')
            if len(in_shape) == 3:
                prev = add(f'{layer.name}.pool', nir.SumPool2d(kernel_size=np.array(in_shape[1:]),
                                                              stride=np.array(in_shape[1:]),
                                                              padding=np.array([0, 0])), prev)
                prev = add(f'{layer.name}.flat', nir.Flatten(input_type={'input': np.array(
                    (in_shape[0], 1, 1))}, start_dim=0, end_dim=-1), prev)
            prev = add(f'{layer.name}.syn', nir.Affine(weight=w, bias=b / t_max), prev)
            prev = add(layer.name, nir.I(r=np.full(w.shape[0], 1.0 / dt), metadata={KEY + 'readout': 1}),
                       prev)
            shape[i] = (w.shape[0],)
            names[i] = prev
            continue
        n = layer.neuron
        di, dv, V = int(n['iDecay']), int(n['vDecay']), int(n['vThMant'])
        out = tuple(layer.shape)
        p = layer.params
        bias = np.asarray(p['bias'], float)
        if di == 0:
            fail(i, layer, 'iDecay = 0 (a current that never decays): tau_syn would be infinite')
        if dv == 0 and di != DECAY_ONE:
            fail(i, layer, 'vDecay = 0 with a decaying current: a current-based neuron without leak has '
                           'no NIR node')
        if V < 1:
            fail(i, layer, f'vThMant = {V}: NIR thresholds here are positive')
        if_neuron = dv == 0
        syn_bias = bias if if_neuron else np.zeros_like(bias)
        if layer.type == 'conv':
            from .netx_file import conv_geometry
            g = conv_geometry(p)
            w = np.asarray(p['weight'], float)
            prev = add(f'{layer.name}.syn', nir.Conv2d(
                input_shape=tuple(in_shape[1:]), weight=w, stride=tuple(g['stride']),
                padding=tuple(g['padding']), dilation=tuple(g['dilation']), groups=int(g['groups']),
                bias=syn_bias), prev)
            per_pos = lambda a: np.broadcast_to(np.asarray(a, float).reshape(-1, 1, 1), out).copy()  # noqa: E731
        else:
            if len(in_shape) != 1:
                prev = add(f'{layer.name}.flat', nir.Flatten(input_type={'input': np.array(in_shape)},
                                                             start_dim=0, end_dim=-1), prev)
            w = np.asarray(p['weight'], float)
            prev = add(f'{layer.name}.syn', nir.Affine(weight=w, bias=syn_bias) if if_neuron
                       else nir.Linear(weight=w), prev)
            per_pos = lambda a: np.broadcast_to(np.asarray(a, float), out).copy()  # noqa: E731
        full = lambda x: np.full(out, float(x))   # noqa: E731
        md = {KEY + 'vThMant': V, KEY + 'iDecay': di, KEY + 'vDecay': dv}
        if if_neuron:
            node = nir.IF(r=full(1.0 / dt), v_threshold=full(V), v_reset=full(0.0), metadata=md)
        else:
            tau_m = DECAY_ONE * dt / dv
            km = dt / tau_m
            v_leak = per_pos(bias / km)
            if di == DECAY_ONE:
                node = nir.LIF(tau=full(tau_m), r=full(tau_m / dt), v_leak=v_leak, v_threshold=full(V),
                               v_reset=full(0.0), metadata=md)
            else:
                tau_s = DECAY_ONE * dt / di
                node = nir.CubaLIF(tau_syn=full(tau_s), tau_mem=full(tau_m), r=full(tau_m / dt),
                                   v_leak=v_leak, v_threshold=full(V), v_reset=full(0.0),
                                   w_in=full(tau_s / dt), metadata=md)
        prev = add(layer.name, node, prev)
        shape[i] = out
        names[i] = prev
    last = shape[len(spec.layers) - 1]
    add('output', nir.Output(output_type={'output': np.array(last)}), prev)
    meta = {KEY + 'format': NIR_FORMAT, KEY + 'dt': float(dt)}
    if t_max:
        meta[KEY + 't_max'] = int(t_max)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def write_graph(graph, path: str):
    """``nir.write`` to a temporary file in ``path``'s folder, then rename (atomic)."""
    nir = _nir()
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise NIRError(f'{path}: folder {folder} does not exist')
    tmp = os.path.join(folder, f'.{os.path.basename(path)}.{os.getpid()}.tmp')
    try:
        nir.write(tmp, normalized(graph))
        os.replace(tmp, path)
    except NIRError:
        raise
    except Exception as e:
        raise NIRError(f'{path}: cannot write the NIR graph ({type(e).__name__}: {str(e)[:200]})') from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def normalized(graph):
    """A copy of a chain graph that ``nir.write`` accepts: torch tensors as numpy
    arrays, and a Conv2d's missing ``input_shape`` filled from the shapes along the
    chain (Norse 1.1.0's ``to_nir`` leaves it None, which ``nir.write`` cannot store)."""
    nir = _nir()
    import copy
    import dataclasses
    nodes = {}
    shape = None
    try:
        order = chain(graph)
    except NIRImportError:
        order = list(graph.nodes.items())
    for name, node in order:
        node = copy.copy(node)
        if dataclasses.is_dataclass(node):
            for f in dataclasses.fields(node):
                val = getattr(node, f.name, None)
                if hasattr(val, 'detach'):
                    setattr(node, f.name, val.detach().cpu().numpy())
        t = _tname(node)
        if t in SPIKING + READOUT_NEURONS and dataclasses.is_dataclass(node):
            for f in dataclasses.fields(node):   # NIR's convention: every field of the layer's shape
                val = getattr(node, f.name, None)
                if isinstance(val, (np.ndarray, float, int)) and np.ndim(val) == 0 and f.name not in (
                        'input_type', 'output_type', 'metadata'):
                    setattr(node, f.name, np.full(shape, float(val)) if shape else np.array([float(val)]))
        if t == 'Input':
            shape = _strip_batch(_io_shape(node, 'input'))
        elif t == 'Conv2d' and shape is not None:
            if node.input_shape is None and len(shape) == 3:
                node.input_shape = tuple(shape[1:])
            try:
                k = np.asarray(node.weight).shape
                st = _pair(node.stride, 'stride', lambda m: None)
                pd = node.padding if not isinstance(node.padding, str) else None
                pd = _pair(pd, 'padding', lambda m: None) if pd is not None else (k[2] // 2, k[3] // 2)
                shape = (k[0], (shape[1] + 2 * pd[0] - k[2]) // st[0] + 1,
                         (shape[2] + 2 * pd[1] - k[3]) // st[1] + 1)
            except Exception:
                shape = None
        elif t in ('Affine', 'Linear'):
            shape = (np.asarray(node.weight).shape[0],)
        elif t == 'Flatten' and shape is not None:
            shape = (int(np.prod(shape)),)
        elif t in ('SumPool2d', 'AvgPool2d') and shape is not None and len(shape) == 3:
            k = _pair(node.kernel_size, 'kernel', lambda m: None)[0]
            shape = (shape[0], shape[1] // k, shape[2] // k)
        nodes[name] = node
    for name, node in graph.nodes.items():
        nodes.setdefault(name, node)
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=dict(getattr(graph, 'metadata', {}) or {}),
                        type_check=False)


# ------------------------------------------------------------------ reference simulation
def simulate(graph_or_path, images, dt: float, steps: int, method: str = 'euler'):
    """Float64 simulation of a NIR chain with the discretisation of this module
    (the definition the import quantises) on constant inputs ``images [S, ...]``
    shown for ``steps`` steps. Returns ``(counts, logits)``: the spike counts
    ``[S, N]`` of the last spiking node, and the readout (the final voltage of
    an I/LI/CubaLI node, or the time sum of a last synapse before the Output;
    the counts when there is no readout)."""
    import torch
    import torch.nn.functional as F
    graph, source = load_graph(graph_or_path)
    nodes = chain(graph, source)
    x0 = torch.as_tensor(np.asarray(images, dtype=np.float64))
    x0 = x0.reshape((x0.shape[0],) + _strip_batch(_io_shape(nodes[0][1], 'input')))
    spiking = [n for n, nd in nodes if _tname(nd) in SPIKING]
    tail = nodes[[n for n, _ in nodes].index(spiking[-1]) + 1:] if spiking else nodes
    sum_at = (tail[-2][0] if len(tail) >= 2 and any(_tname(n) in LINEAR_OPS for _, n in tail)
              and not any(_tname(n) in READOUT_NEURONS for _, n in tail) else None)

    def field(node, key, shape, default=None):
        val = getattr(node, key, None)
        a = _arr(default if val is None else val)
        return torch.as_tensor(np.broadcast_to(a.reshape(()) if a.size == 1 else a.reshape(shape), shape).copy())

    state = {}
    for t in range(steps):
        x = x0
        for name, node in nodes[1:-1]:
            tn = _tname(node)
            if tn == 'Flatten':
                x = x.reshape(x.shape[0], -1)
            elif tn == 'Scale':
                x = x * field(node, 'scale', tuple(x.shape[1:]))
            elif tn in ('Affine', 'Linear'):
                x = x @ torch.as_tensor(_arr(node.weight)).T
                if tn == 'Affine' and node.bias is not None:
                    x = x + torch.as_tensor(_arr(node.bias)).reshape(-1)
            elif tn == 'Conv2d':
                pad = node.padding if isinstance(node.padding, str) else _pair(node.padding, 'padding', None)
                bias = torch.as_tensor(_arr(node.bias)).reshape(-1) if node.bias is not None else None
                x = F.conv2d(x, torch.as_tensor(_arr(node.weight)), bias, stride=_pair(node.stride, 's', None),
                             padding=pad, dilation=_pair(node.dilation, 'd', None), groups=int(node.groups))
            elif tn in ('SumPool2d', 'AvgPool2d'):
                k = _pair(node.kernel_size, 'kernel', None)
                x = F.avg_pool2d(x, k, stride=_pair(node.stride, 'stride', None)) * (
                    k[0] * k[1] if tn == 'SumPool2d' else 1)
            elif tn in SPIKING or tn in READOUT_NEURONS:
                shp = tuple(x.shape[1:])
                v = state.get((name, 'v'), torch.zeros_like(x))
                drive = x
                if tn in ('CubaLIF', 'CubaLI'):
                    ks = step_factor(dt, float(_arr(node.tau_syn).max()), method)
                    cur = (1 - ks) * state.get((name, 'i'), torch.zeros_like(x)) + ks * field(node, 'w_in', shp, 1.0) * x
                    state[(name, 'i')] = drive = cur
                if tn in ('IF', 'I'):
                    v = v + dt * field(node, 'r', shp) * drive
                else:
                    km = step_factor(dt, float(_arr(node.tau if tn in ('LIF', 'LI') else node.tau_mem).max()), method)
                    v = (1 - km) * v + km * (field(node, 'v_leak', shp, 0.0) + field(node, 'r', shp) * drive)
                if tn in SPIKING:
                    z = (v > field(node, 'v_threshold', shp)).to(v.dtype)
                    v = v * (1 - z)
                    state[(name, 'count')] = state.get((name, 'count'), 0) + z.reshape(z.shape[0], -1)
                    x = z
                else:
                    x = v
                state[(name, 'v')] = v
            if name == sum_at:
                state['sum'] = state.get('sum', 0) + x.reshape(x.shape[0], -1)   # readout without neuron
    counts = state[(spiking[-1], 'count')].numpy() if spiking else None
    readouts = [n for n, nd in nodes if _tname(nd) in READOUT_NEURONS]
    if readouts:
        logits = state[(readouts[-1], 'v')].reshape(x0.shape[0], -1).numpy()
    elif 'sum' in state:
        logits = state['sum'].numpy()
    else:
        logits = counts
    return counts, logits
