"""Read and write NetX HDF5 network files with lava_dtss extensions.

Schema: ``docs/hdf5_schema.md``. Layers NetX knows (``input``, ``conv``,
``flatten``, ``dense``) use NetX's keys, so a purely sequential network loads in
stock ``lava.lib.dl.netx.hdf5.Network``; ``attention`` and ``readout`` layers
and every ``dtss/`` key are extensions. Files without ``dtss/inputs`` (stock
NetX files) are read as a chain.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..loihi2 import (MAX_DECAY, MAX_DELAY, MAX_FILE_BIAS, MAX_WEIGHT, MIN_FILE_BIAS, MIN_WEIGHT, VTH_MANT_BITS,
                      bias_split)

FORMAT = 'lava-dtss-netx/1'
LAYER_TYPES = ('input', 'conv', 'flatten', 'dense', 'attention', 'readout')
NEURON_KEYS = ('type', 'iDecay', 'vDecay', 'vThMant', 'refDelay', 'gradedSpike')
# stock NetX's neuron of a dense layer without neuron/ (see _read_layer): its threshold never fires
STOCK_NO_NEURON = {'type': 'CUBA', 'iDecay': 0, 'vDecay': MAX_DECAY, 'vThMant': 1 << VTH_MANT_BITS}
# layer types stock NetX (lava-dl 0.x hdf5.Network) raises NotImplementedError on
NOT_IN_NETX = ('average', 'pool', 'convT', 'unpool', 'concat')
MAX_T = 1 << 16              # time steps per sample a file may declare
MAX_VALUES = 1 << 27         # values one dataset may hold (1 GiB as int64); checked before reading
# limits of our own format (Loihi 2): 8-bit signed weights, 17-bit threshold, 13-bit bias mantissa
# at bias_exp 6 or 7 (loihi2.bias_split)
OWN_LIMITS = {'weight': (MIN_WEIGHT, MAX_WEIGHT), 'bias': (MIN_FILE_BIAS, MAX_FILE_BIAS)}


class NetXFormatError(ValueError):
    """A network file is missing, unreadable or does not follow the schema."""


@dataclass
class LayerSpec:
    """One layer. ``shape`` is the output ``(C, H, W)`` (``(N,)`` for dense and
    readout); ``inputs`` are indices of earlier layers whose outputs are summed
    into this layer's input (for ``attention``: q, k, v in that order);
    ``active_steps`` is the DTSS ``T_l`` (None: every step)."""
    type: str
    name: str
    shape: tuple
    inputs: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    neuron: dict = field(default_factory=dict)
    category: str = ''
    active_steps: int | None = None


@dataclass
class NetSpec:
    layers: list
    meta: dict = field(default_factory=dict)

    @property
    def t_max(self):
        return int(self.meta['t_max']) if 't_max' in self.meta else None


# ---------------------------------------------------------------- writing
def _str(g, key, value):
    g.create_dataset(key, (1,), 'S32', [str(value).encode('ascii')])


def write_netx(spec: NetSpec, path: str):
    """Write ``spec`` to ``path`` atomically (temporary file, then rename). A
    failure (folder under /proc, full disk, ...) raises ``OSError`` naming
    ``path``, not the temporary file."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f'.{os.path.basename(path)}.{os.getpid()}.tmp')
    try:
        _write_netx(spec, path, folder, tmp)
    except (OSError, RuntimeError) as e:   # h5py raises RuntimeError for a write that fails on close
        code = getattr(e, 'errno', None)
        if not code:                       # h5py's text: "... errno = 28, error message = ..."
            import re
            m = re.search(r'errno = (\d+)', str(e))
            code = int(m.group(1)) if m else None
        reason = os.strerror(code) if code else ' '.join(str(e).replace(tmp, path).split())[:200]
        raise OSError(code, f'cannot write the network file ({reason})', path) from None


def _write_netx(spec: NetSpec, path: str, folder: str, tmp: str):
    os.makedirs(folder, exist_ok=True)
    try:
        with h5py.File(tmp, 'w') as f:
            meta = f.create_group('meta')
            for k, v in spec.meta.items():
                meta.create_dataset(k, data=v)
            group = f.create_group('layer')
            for i, layer in enumerate(spec.layers):
                g = group.create_group(str(i))
                g.create_dataset('type', (1,), 'S10', [layer.type.encode('ascii')])
                if layer.type != 'flatten':
                    g.create_dataset('shape', data=np.asarray(layer.shape, dtype=np.int64))
                for k, v in layer.params.items():
                    if k == 'inputScale':
                        g.create_dataset('dtss/inputScale', data=v)
                    else:
                        g.create_dataset(k, data=v)
                for k, v in layer.neuron.items():
                    if k == 'type':
                        g.create_dataset('neuron/type', (1,), 'S10', [v.encode('ascii')])
                    else:
                        g.create_dataset(f'neuron/{k}', data=v)
                _str(g, 'dtss/name', layer.name)
                if layer.inputs:
                    g.create_dataset('dtss/inputs', data=np.asarray(layer.inputs, dtype=np.int64))
                if layer.category:
                    _str(g, 'dtss/category', layer.category)
                if layer.active_steps is not None:
                    g.create_dataset('dtss/activeSteps', data=int(layer.active_steps))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------- reading
def _decode(value):
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else b''
    return value.decode('utf-8', errors='replace') if isinstance(value, bytes) else str(value)


class _Layer:
    """Checked access to one layer group; errors name the file and layer."""

    def __init__(self, path, index, group):
        self.path, self.index, self.g = path, index, group
        self.type = None

    def fail(self, msg):
        what = f'layer {self.index}' + (f' ({self.type})' if self.type else '')
        raise NetXFormatError(f'{self.path}: {what}: {msg}')

    def has(self, key):
        try:
            return key in self.g
        except (KeyError, RuntimeError, OSError) as e:
            self.fail(f'cannot look up key {key!r} ({type(e).__name__}: {e})')

    def get(self, key, ndim=None, integer=True, text=False):
        if not self.has(key):
            self.fail(f'missing key {key!r}')
        try:
            item = self.g[key]
        except (KeyError, RuntimeError, OSError) as e:
            self.fail(f'cannot open key {key!r}, a dangling or looping link? ({type(e).__name__}: {e})')
        if not isinstance(item, h5py.Dataset):
            self.fail(f'{key!r} should be a dataset, found a group')
        if item.size is not None and item.size > MAX_VALUES:
            self.fail(f'{key!r} declares {item.size} values (shape {item.shape}), beyond the '
                      f'{MAX_VALUES} values a dataset may hold; refused before reading it')
        value = item[()]
        if isinstance(value, bytes) or (isinstance(value, np.ndarray) and value.dtype.kind in 'SOU'):
            if not text:
                self.fail(f'{key!r} has dtype {item.dtype} (strings), expected numbers')
            return _decode(value)
        arr = np.asarray(value)
        if arr.dtype.kind not in 'biuf':
            self.fail(f'{key!r} has dtype {arr.dtype}, expected a number')
        if arr.dtype.kind == 'u' and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            self.fail(f'{key!r} holds unsigned values beyond the int64 range (max {int(arr.max())})')
        if arr.dtype.kind == 'f' and arr.size and np.any(np.abs(arr[np.isfinite(arr)]) >= 2.0 ** 62):
            self.fail(f'{key!r} holds values beyond the int64 range')
        if integer:
            if arr.dtype.kind == 'f':
                if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                    self.fail(f'{key!r} must hold integers (hardware values), found non-integer floats')
            arr = arr.astype(np.int64)
        if ndim is not None and arr.ndim != ndim:
            self.fail(f'{key!r} has shape {arr.shape}, expected {ndim} dimension(s)')
        return arr

    def string(self, key):
        v = self.get(key, text=True)
        if not isinstance(v, str):
            self.fail(f'{key!r} should be a string')
        return v

    def scalar(self, key):
        arr = self.get(key)
        if isinstance(arr, str) or arr.size != 1:
            found = f'{arr[:40]!r}' if isinstance(arr, str) else f'an array of shape {arr.shape}'
            self.fail(f'{key!r} should be a single integer, found {found}')
        return int(arr.reshape(-1)[0])


def conv_geometry(params: dict) -> dict:
    """``stride``, ``padding``, ``dilation`` ((H, W) pairs) and ``groups`` of a conv layer."""
    if 'geometry' in params:
        return params['geometry']
    s, p = params.get('stride', 1), params.get('padding', 0)
    return {'stride': (s, s), 'padding': (p, p), 'dilation': (1, 1), 'groups': 1}


def require_plain(spec: NetSpec, what: str):
    """Raise ``ValueError`` naming the first layer with a stock-only feature
    (conv ``geometry``, dense ``delay``) that ``what`` does not handle."""
    if spec.layers[0].neuron:
        raise ValueError(f'layer 0 ({spec.layers[0].name!r}): {what} does not support an input layer '
                         'with a neuron; run it with the fused runtime (--build fused)')
    for i, layer in enumerate(spec.layers):
        for key, name in (('geometry', 'conv geometry (per-axis stride/padding, dilation, groups, '
                                       'non-square kernel)'), ('delay', 'synaptic delays')):
            if key in layer.params:
                raise ValueError(f'layer {i} ({layer.name!r}): {what} does not support {name}; '
                                 'run it with the fused runtime (--build fused)')


def _conv_out(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def _read_meta(path, f) -> dict:
    """The ``meta`` group, every key checked: ``format`` and ``dataset``/``command``
    strings, ``t_max`` a positive integer, ``dtss`` 0 or 1, ``config`` a JSON object."""
    if 'meta' not in f:
        return {}
    if not isinstance(f['meta'], h5py.Group):
        raise NetXFormatError(f'{path}: meta should be a group of datasets, found a {type(f["meta"]).__name__}')
    meta = {}
    for k in f['meta']:
        d = f['meta'][k]
        if not isinstance(d, h5py.Dataset):
            raise NetXFormatError(f'{path}: meta/{k} should be a dataset, found a group')
        v = d[()]
        if isinstance(v, bytes) or (isinstance(v, np.ndarray) and v.dtype.kind in 'SOU'):
            meta[k] = _decode(v)
        elif np.ndim(v) == 0:
            meta[k] = v.item()
        else:
            meta[k] = v
    for k in ('format', 'config', 'dataset', 'command'):
        if k in meta and not isinstance(meta[k], str):
            raise NetXFormatError(f'{path}: meta/{k} should be a string, found {meta[k]!r}')
    if 't_max' in meta:
        v = meta['t_max']
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v)
                or not 1 <= int(v) <= MAX_T):
            raise NetXFormatError(f'{path}: meta/t_max = {v!r}: expected a whole number of time steps in 1..{MAX_T}')
        meta['t_max'] = int(v)
    if 'dtss' in meta and (isinstance(meta['dtss'], str) or meta['dtss'] not in (0, 1)):
        raise NetXFormatError(f'{path}: meta/dtss = {meta["dtss"]!r}: expected 0 or 1')
    if 'config' in meta:
        from ..model.presets import ViTConfig  # lazy: the reader serves stock files without torch models too
        try:
            cfg = json.loads(meta['config'])
            if not isinstance(cfg, dict):
                raise TypeError(f'a JSON {type(cfg).__name__}, not an object')
            ViTConfig.from_dict(cfg)
        except (ValueError, TypeError, KeyError) as e:
            raise NetXFormatError(f'{path}: meta/config is not a lava_dtss model configuration ({e}); '
                                  'expected the JSON object written by the export') from None
    return meta


def read_netx(path: str, skip_input_neuron: bool = False, num_layers: int = None) -> NetSpec:
    """Read and validate a network file (ours or stock NetX).

    An input layer with a neuron (SLAYER's ``Input`` block) is read as stock
    NetX builds it: a CUBA-LIF neuron per input value (``LayerSpec.neuron``),
    driven by data into it and by its bias (stock NetX's ``Input`` block runs
    on the CPU when data go to ``net.in_layer.neuron.a_in`` and/or its
    ``bias_mant`` is set; only data sent to ``net.inp`` fail there). With
    ``skip_input_neuron`` the neuron is dropped and the data go straight to
    layer 1, as ``netx.hdf5.Network(path, skip_layers=1)``.

    ``num_layers``: read only the file's layers ``0 .. num_layers - 1`` (as
    ``Network(num_layers=K)``; the layers after them are not read at all).

    Raises ``NetXFormatError`` with the file, layer and key for any problem,
    including unreadable HDF5 structure (dangling or looping links).
    """
    try:
        return _read_netx(path, skip_input_neuron, num_layers)
    except NetXFormatError as e:   # one line, whatever a value printed into it
        raise NetXFormatError(' '.join(str(e).split())) from None
    except (KeyError, RuntimeError, OSError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise NetXFormatError(f'{path}: cannot read the file\'s structure ({type(e).__name__}: {e}); '
                              'expected a NetX HDF5 network') from None


def _read_netx(path: str, skip_input_neuron: bool = False, num_layers: int = None) -> NetSpec:
    if not os.path.exists(path):
        raise NetXFormatError(f'{path}: no such file (expected a NetX HDF5 network, e.g. '
                              'netx_models/digits_tiny_dtss.net)')
    if not os.path.isfile(path) or not h5py.is_hdf5(path):
        raise NetXFormatError(f'{path}: not an HDF5 file (expected a NetX HDF5 network)')
    try:
        f = h5py.File(path, 'r')
    except OSError as e:
        raise NetXFormatError(f'{path}: cannot open as HDF5: {e}') from None
    with f:
        meta = _read_meta(path, f)
        if 'format' in meta and meta['format'] != FORMAT:
            raise NetXFormatError(f'{path}: format {meta["format"]!r} is not supported (expected {FORMAT!r})')
        if 'layer' not in f or not isinstance(f['layer'], h5py.Group):
            raise NetXFormatError(f'{path}: missing group "layer" (expected NetX layers layer/0, layer/1, ...)')
        group = f['layer']
        n = len(group)
        if n == 0 or sorted(group.keys(), key=lambda s: int(s) if s.isdigit() else -1) != [str(i) for i in range(n)]:
            raise NetXFormatError(f'{path}: layers must be numbered layer/0 .. layer/{n - 1}, found {sorted(group.keys())}')
        if num_layers is not None:
            if not 1 <= num_layers <= n:
                raise NetXFormatError(f'{path}: num_layers {num_layers} out of range 1..{n} (the file has '
                                      f'{n} layers, layer/0 .. layer/{n - 1})')
            n = num_layers
        layers = []
        for i in range(n):
            g = group[str(i)]
            if not isinstance(g, h5py.Group):
                raise NetXFormatError(f'{path}: layer/{i} should be a group of datasets, found a '
                                      f'{type(g).__name__}')
            layers.append(_read_layer(_Layer(path, i, g), layers, skip_input_neuron))
    spec = NetSpec(layers=layers, meta=meta)
    _check_graph(path, spec)
    _check_sdnn(path, spec)
    if meta.get('format') == FORMAT:
        _check_own_limits(path, spec)
        _check_own_consistency(path, spec)
    return spec


def is_sdnn(spec: NetSpec) -> bool:
    """A sigma-delta network: some layer's neuron is ``SDNN`` (``_check_sdnn``
    then requires every layer's to be)."""
    return any(l.neuron.get('type') == 'SDNN' for l in spec.layers)


def _check_sdnn(path, spec: NetSpec):
    """A sigma-delta network runs only as stock NetX builds lava-dl's SDNN files:
    SDNN neurons in every layer (input included), a chain of input/conv/flatten/
    dense layers, ``Sigma`` (sigma_output) only in the last layer."""
    if not is_sdnn(spec):
        return
    for i, l in enumerate(spec.layers):
        def fail(msg):
            raise NetXFormatError(f'{path}: layer {i} ({l.type}): {msg}')
        if l.type in ('input', 'conv', 'dense') and l.neuron.get('type') != 'SDNN':
            fail('a network mixing sigma-delta (SDNN) and CUBA-LIF layers (or layers without '
                 'neuron) is not supported; every layer of an SDNN network needs neuron/type SDNN')
        if l.type not in ('input', 'conv', 'dense', 'flatten'):
            fail(f'layer type {l.type!r} in a sigma-delta (SDNN) network is not supported')
        if l.neuron.get('kind') == 'sigma' and i != len(spec.layers) - 1:
            fail('neuron/sigma_output (a Sigma decoder, no delta encoding) is supported on the last '
                 'layer only')
        if 'delay' in l.params:
            fail('synaptic delays in a sigma-delta (SDNN) network are not supported')


def _check_own_consistency(path, spec: NetSpec):
    """What the training-side reference of our own files builds from
    ``meta/config`` must be what the file holds; else the disagreement showed
    only after the whole Lava run, as "Lava differs"."""
    cfg = json.loads(spec.meta['config']) if 'config' in spec.meta else {}
    if 't_max' in cfg and spec.t_max is not None and int(cfg['t_max']) != spec.t_max:
        raise NetXFormatError(f'{path}: meta/t_max = {spec.t_max} but meta/config has t_max = '
                              f'{cfg["t_max"]}; the export writes the same value in both')
    for i, layer in enumerate(spec.layers):
        if layer.type == 'attention' and len(set(layer.inputs)) != len(layer.inputs):
            raise NetXFormatError(f'{path}: layer {i} (attention {layer.name!r}): dtss/inputs {layer.inputs} '
                                  'must name three different layers (q, k, v), as the export writes them')
        if layer.type == 'input' and layer.params.get('inputScale', 1) < 1:
            raise NetXFormatError(f'{path}: layer 0 (input): dtss/inputScale = {layer.params["inputScale"]} '
                                  'must be >= 1 (pixels in [0, 1] are sent as round(inputScale * x))')


def _check_own_limits(path, spec: NetSpec):
    """Our own files hold Loihi 2 integers: refuse weights and biases the export never
    writes (they can overflow the 24-bit state, which Lava wraps and the training side
    does not, and would surface only as a mismatch after a Lava run). Thresholds beyond
    17 bits stay readable: ``--check-loihi`` reports them."""
    for i, layer in enumerate(spec.layers):
        stock_only = [what for what, has in (
            ('synaptic delays', 'delay' in layer.params),
            ('conv geometry (per-axis stride/padding, dilation, groups, non-square kernel)',
             'geometry' in layer.params),
            ('a dense layer without neuron', layer.type == 'dense' and layer.neuron == STOCK_NO_NEURON),
            ('an input layer with a neuron', layer.type == 'input' and bool(layer.neuron)))
            if has]
        if stock_only:
            raise NetXFormatError(f'{path}: layer {i} ({layer.type} {layer.name!r}): {stock_only[0]} '
                                  f'in a {FORMAT} file, which the export never writes (stock NetX '
                                  'files only)')
        for key, (lo, hi) in OWN_LIMITS.items():
            v = layer.params.get(key)
            if isinstance(v, np.ndarray) and v.size and (v.min() < lo or v.max() > hi) and layer.type != 'readout':
                raise NetXFormatError(f'{path}: layer {i} ({layer.type} {layer.name!r}): {key} values '
                                      f'{int(v.min())}..{int(v.max())} exceed the range {lo}..{hi} '
                                      '(8-bit weights, 13-bit bias of Loihi 2)')
        b = layer.params.get('bias')
        if layer.type != 'readout' and isinstance(b, np.ndarray) and b.size and bias_split(b) is None:
            raise NetXFormatError(f'{path}: layer {i} ({layer.type} {layer.name!r}): bias values '
                                  f'{int(b.min())}..{int(b.max())} beyond the 13-bit mantissa must all be '
                                  'even (Loihi 2 bias_exp 7: one exponent per layer)')



def _read_layer(L: _Layer, previous: list, skip_input_neuron: bool = False) -> LayerSpec:
    t = L.string('type')
    L.type = t
    if t in ('average', 'pool', 'convT', 'unpool', 'concat', 'dense_rec', 'dense_comp'):
        L.fail(f'layer type {t!r} is not supported by this runtime (stock NetX '
               f'{"does not run them either" if t in NOT_IN_NETX else "runs them"}); '
               f'supported: {", ".join(LAYER_TYPES)}'
               + (f'; to run the layers before it pass --num-layers {L.index} (stock: '
                  f'Network(num_layers={L.index}))' if L.index > 1 else ''))
    if t not in LAYER_TYPES:
        L.fail(f'unknown layer type {t!r}; this runtime supports {", ".join(LAYER_TYPES)}')
    name = L.string('dtss/name') if L.has('dtss/name') else f'layer{L.index}'
    spec = LayerSpec(type=t, name=name, shape=())
    if t != 'flatten':
        spec.shape = tuple(int(v) for v in L.get('shape', ndim=1))
        if any(v < 1 for v in spec.shape):
            L.fail(f'shape {spec.shape} must be positive')
    if L.has('dtss/inputs'):
        spec.inputs = [int(v) for v in L.get('dtss/inputs', ndim=1)]
    elif L.index > 0:
        spec.inputs = [L.index - 1]          # stock NetX: a chain
    if L.has('dtss/category'):
        spec.category = L.string('dtss/category')
    if L.has('dtss/activeSteps'):
        spec.active_steps = L.scalar('dtss/activeSteps')
    if t == 'input':
        if len(spec.shape) not in (1, 3):
            L.fail(f'shape {spec.shape} should be (C, H, W) or (N,)')
        spec.params['inputScale'] = L.scalar('dtss/inputScale') if L.has('dtss/inputScale') else 1
        if L.has('neuron/type') and L.string('neuron/type') == 'SDNN':
            # stock NetX's Input block of an SDNN file: a Delta encoder (no bias, no synapse)
            if skip_input_neuron:
                L.fail('--skip-input-neuron with a sigma-delta (SDNN) input layer: its delta encoder '
                       'is what turns the data into graded messages; run it with the input neuron')
            spec.neuron = _sdnn_neuron(L, input_layer=True)
            return spec
        if L.has('neuron') and not skip_input_neuron:
            # stock NetX's Input block: a CUBA-LIF neuron per input value, driven by data into
            # its a_in (no synapse, no latency) and/or its bias; the file's input transform
            # (weight, bias) is not applied (stock NetX only stores it, as Input.transform)
            spec.neuron = _cuba_neuron(L)
        return spec
    if t == 'flatten':
        return spec
    if t == 'conv' and L.has('delay'):
        d = L.get('delay')
        if d.size and np.any(d != 0):
            L.fail(f'axonal delays on a conv layer (key \'delay\', up to {int(np.max(d))} steps) are '
                   'not supported (stock NetX ignores them); refused rather than run without them')
    if t in ('readout', 'attention') and L.has('delay'):     # was ignored (issue 26)
        d = L.get('delay')
        if d.size and np.any(d != 0):
            L.fail(f"delays (key 'delay', up to {int(np.max(d))} steps) on a{'n' if t == 'attention' else ''} "
                   f'{t} layer are not supported (only dense layers take delays); remove the key')
    if t in ('conv', 'dense', 'attention'):
        if not L.has('neuron') and t != 'dense':
            L.fail('a layer without neuron is not supported (stock NetX refuses it too); '
                   'expected a neuron/ group')
    if t == 'dense' and not L.has('neuron'):
        # stock NetX's default: a non-leaky current integrator whose threshold
        # (vThMant 1 << 17, i.e. v > 2**23) the 24-bit voltage never reaches: no spikes
        spec.neuron = dict(STOCK_NO_NEURON)
    elif t in ('conv', 'dense') and L.has('neuron/type') and L.string('neuron/type') == 'SDNN':
        spec.neuron = _sdnn_neuron(L)
        if spec.neuron['kind'] == 'sigma' and L.has('bias'):
            L.fail('a bias on a sigma-output (neuron/sigma_output) layer: stock NetX\'s Sigma neuron '
                   'has none (it cannot build this layer either)')
    elif t in ('conv', 'dense', 'attention'):
        spec.neuron = _cuba_neuron(L)
    if t == 'conv':
        if len(spec.shape) != 3:
            L.fail(f'shape {spec.shape} should be (C, H, W)')
        w = L.get('weight')
        if w.ndim == 5 and w.shape[4] == 1:     # SLAYER's [Co, Ci, kh, kw, 1]
            w = w[..., 0]
        if w.ndim != 4:
            L.fail(f"'weight' has shape {w.shape}, expected [Co, Ci, kh, kw] (or SLAYER's "
                   "[Co, Ci, kh, kw, 1])")
        cout, cin, kh, kw = w.shape
        if kh < 1 or kw < 1:
            L.fail(f'weight has shape {w.shape}: the kernel must be at least 1x1')
        stride = np.broadcast_to(L.get('stride'), (2,)) if L.has('stride') else np.array([1, 1])
        pad = np.broadcast_to(L.get('padding'), (2,)) if L.has('padding') else np.array([0, 0])
        dil = np.broadcast_to(L.get('dilation'), (2,)) if L.has('dilation') else np.array([1, 1])
        groups = L.scalar('groups') if L.has('groups') else 1
        if np.any(stride < 1) or np.any(pad < 0) or np.any(dil < 1) or groups < 1:
            L.fail(f'stride {stride.tolist()} and dilation {dil.tolist()} must be >= 1, padding '
                   f'{pad.tolist()} >= 0 and groups {groups} >= 1')
        if cout != spec.shape[0]:
            L.fail(f'weight has {cout} output channels but shape is {spec.shape}')
        if cout % groups:
            L.fail(f'{cout} output channels are not divisible by groups = {groups}')
        spec.params = {'weight': w, 'stride': int(stride[0]), 'padding': int(pad[0]),
                       'bias': _bias(L, cout)}
        if (kh != kw or groups != 1 or np.any(dil != 1) or stride[0] != stride[1]
                or pad[0] != pad[1]):   # (H, W) order, as torch and SLAYER write them
            spec.params['geometry'] = {'stride': tuple(int(v) for v in stride),
                                       'padding': tuple(int(v) for v in pad),
                                       'dilation': tuple(int(v) for v in dil), 'groups': int(groups)}
    elif t == 'dense':
        if L.has('weight/real') or L.has('weight/imag'):
            L.fail("complex weights (weight/real, weight/imag: NetX's ComplexDense, for resonate-and-fire "
                   'neurons) are not supported')
        w = L.get('weight')
        n = int(np.prod(spec.shape))
        if w.ndim == 1 and w.size % n == 0:     # NetX reads a flat weight as [out, -1]
            w = w.reshape(n, -1)
        if w.ndim != 2:
            L.fail(f"'weight' has shape {w.shape}, expected [out, in] (or a flat array of out x in)")
        if int(np.prod(spec.shape)) != w.shape[0]:
            L.fail(f'weight has {w.shape[0]} outputs but shape is {spec.shape}')
        spec.shape = (w.shape[0],)
        spec.params = {'weight': w, 'bias': _bias(L, w.shape[0])}
        if L.has('delay'):
            d = _delay(L, w.shape)
            if np.any(d):
                spec.params['delay'] = d
    elif t == 'attention':
        spec.params = {'weight': L.scalar('weight'), 'heads': L.scalar('heads')}
        if len(spec.shape) != 3:
            L.fail(f'shape {spec.shape} should be (C, H, W)')
        if spec.params['heads'] < 1:
            L.fail(f'heads = {spec.params["heads"]} must be >= 1')
        if spec.shape[0] % spec.params['heads']:
            L.fail(f'{spec.shape[0]} channels are not divisible by {spec.params["heads"]} heads')
        if len(spec.inputs) != 3:
            L.fail(f'dtss/inputs must list the q, k, v layers (3), found {spec.inputs}')
    elif t == 'readout':
        w = L.get('weight', ndim=2)
        spec.params = {'weight': w, 'bias': _bias(L, w.shape[0])}
        if spec.shape != (w.shape[0],):
            L.fail(f'shape {spec.shape} does not match weight {w.shape}')
    return spec


SDNN_KEYS = ('type', 'vThMant', 'activation', 'sigma_output', 'messageBits')
SDNN_MAX_MANT = 1 << 19      # threshold and bias mantissas whose << 12 fits int32


def _sdnn_neuron(L: _Layer, input_layer: bool = False) -> dict:
    """The sigma-delta neuron of an ``SDNN`` layer as stock NetX builds it
    (``hdf5.Network.get_neuron_params``): the input layer's ``Delta`` encoder,
    ``Sigma`` where ``neuron/sigma_output`` is present, else ``SigmaDelta``;
    ReLU activation, no cumulative error, 16-bit graded messages. Variants NetX
    would build differently or we do not run are refused in one line."""
    extra = sorted(k for k in L.g['neuron'].keys() if k not in SDNN_KEYS)
    if extra:
        L.fail(f'sigma-delta (SDNN) neuron key(s) {", ".join("neuron/" + k for k in extra)} are not '
               f'supported (supported: {", ".join("neuron/" + k for k in SDNN_KEYS)})')
    if L.has('neuron/activation'):
        act = L.string('neuron/activation').lower()
        if act != 'relu':
            L.fail(f'sigma-delta (SDNN) activation {act!r} is not supported (stock NetX ignores '
                   "neuron/activation and runs ReLU); supported: 'relu'")
    if L.has('neuron/messageBits') and L.scalar('neuron/messageBits') not in (16,):
        L.fail(f'sigma-delta (SDNN) neuron/messageBits = {L.scalar("neuron/messageBits")} is not '
               'supported (supported: 16, NetX\'s default)')
    sigma = L.has('neuron/sigma_output') and not input_layer
    if not sigma and not L.has('neuron/vThMant'):
        L.fail('missing key neuron/vThMant (the delta threshold of a sigma-delta neuron)')
    vth = L.scalar('neuron/vThMant') if L.has('neuron/vThMant') else 0
    # Lava's SigmaDelta/Delta store vth << 12 and bias << 12 in int32
    if not 0 <= vth < SDNN_MAX_MANT:
        L.fail(f'neuron/vThMant = {vth} out of range 0..{SDNN_MAX_MANT - 1} (Lava stores it << 12 in int32)')
    if L.has('bias'):
        b = L.get('bias')
        if b.size and np.abs(b).max() >= SDNN_MAX_MANT:
            L.fail(f'bias values up to {int(np.abs(b).max())} beyond +-{SDNN_MAX_MANT - 1} (a sigma-delta '
                   'neuron stores its bias << 12 in int32)')
    return {'type': 'SDNN', 'kind': 'delta' if input_layer else 'sigma' if sigma else 'sigma_delta',
            'vThMant': vth}


def _cuba_neuron(L: _Layer) -> dict:
    """The CUBA-LIF neuron of a layer group (``neuron/``), every key checked."""
    if not L.has('neuron/type'):
        L.fail('missing key neuron/type (stock NetX needs it too; expected CUBA)')
    ntype = L.string('neuron/type')
    if ntype == 'SDNN':
        L.fail('sigma-delta (SDNN) neurons run on conv and dense layers only')
    if ntype not in ('CUBA', 'LOIHI'):
        L.fail(f'neuron type {ntype!r} is not supported; this runtime runs CUBA-LIF '
               'neurons only (neuron/type CUBA or LOIHI)')
    for k in ('iDecay', 'vDecay', 'vThMant'):
        if not L.has(f'neuron/{k}'):
            L.fail(f'missing key neuron/{k}')
    neuron = {'type': 'CUBA', 'iDecay': L.scalar('neuron/iDecay'),
              'vDecay': L.scalar('neuron/vDecay'), 'vThMant': L.scalar('neuron/vThMant')}
    if L.has('neuron/gradedSpike') and L.scalar('neuron/gradedSpike'):
        L.fail('graded-spike neurons are not supported (expected gradedSpike = 0)')
    if L.has('neuron/messageBits') and L.scalar('neuron/messageBits'):
        L.fail('graded output messages (neuron/messageBits) are not supported (stock NetX cannot '
               'read that key either); CUBA-LIF spikes are binary')
    for k in ('iDecay', 'vDecay'):
        if not 0 <= neuron[k] <= MAX_DECAY:
            L.fail(f'neuron/{k} = {neuron[k]} out of range 0..{MAX_DECAY}')
    if neuron['vThMant'] < 0:
        L.fail('neuron/vThMant must be >= 0')
    return neuron


def _delay(L: _Layer, shape):
    """Synaptic delays ``[out, in]`` of a dense layer, expanded as NetX does: a
    scalar, ``(out,)`` (axonal: every synapse of an output neuron), ``(in,)``,
    or ``[out, in]``; whole steps in 0..62 (``MAX_DELAY``: NetX clamps larger
    delays with a warning; we refuse them)."""
    d = L.get('delay')
    if d.size and (d.min() < 0 or d.max() > MAX_DELAY):
        L.fail(f'delay values {int(d.min())}..{int(d.max())} outside 0..{MAX_DELAY} steps '
               '(NetX would clamp them)')
    if d.ndim == 0:
        return np.full(shape, int(d.reshape(-1)[0]), dtype=np.int64)
    if d.ndim == 1 and d.size == shape[0]:
        return np.repeat(d.reshape(-1, 1), shape[1], axis=1)
    if d.ndim == 1 and d.size == shape[1]:
        return np.repeat(d.reshape(1, -1), shape[0], axis=0)
    if d.shape == tuple(shape):
        return d
    L.fail(f'delay has shape {d.shape}, expected (), ({shape[0]},), ({shape[1]},) or {tuple(shape)}')


def _bias(L: _Layer, n: int):
    if not L.has('bias'):
        return np.zeros(n, dtype=np.int64)
    b = L.get('bias').reshape(-1)
    if b.size == 1:
        b = np.full(n, int(b[0]), dtype=np.int64)
    if b.shape != (n,):
        L.fail(f'bias has shape {b.shape}, expected ({n},)')
    return b


def _check_graph(path, spec: NetSpec):
    """Inputs refer to earlier layers and shapes agree along every edge."""
    layers = spec.layers
    if layers[0].type != 'input':
        raise NetXFormatError(f'{path}: layer 0 is {layers[0].type!r}, expected an input layer')
    t_max = spec.t_max
    first = {}
    for i, layer in enumerate(layers):
        if layer.name in first:
            raise NetXFormatError(f'{path}: layer {i} ({layer.type} {layer.name!r}): dtss/name {layer.name!r} '
                                  f'is also the name of layer {first[layer.name]}; every layer needs its own name')
        first[layer.name] = i
    for i, layer in enumerate(layers):
        def fail(msg):
            raise NetXFormatError(f'{path}: layer {i} ({layer.type} {layer.name!r}): {msg}')
        if layer.active_steps is not None and t_max is not None and not 1 <= layer.active_steps <= t_max:
            fail(f'dtss/activeSteps = {layer.active_steps} out of range 1..{t_max}')
        if i == 0:
            continue
        if layer.type == 'input':     # its process would be cut off from the network (issue 26)
            fail('a second input layer: a network has one input layer, layer 0 (feed your data there, or '
                 'split the file into two networks)')
        if not layer.inputs or any(not 0 <= j < i for j in layer.inputs):
            fail(f'dtss/inputs {layer.inputs} must name earlier layers (0..{i - 1})')
        origin = {}     # the layer each input resolves to through flatten layers
        for j in layer.inputs:
            k = j
            while layers[k].type == 'flatten' and layers[k].inputs:
                k = layers[k].inputs[0]
            if k in origin.values() and layer.type != 'attention':
                via = '' if j == k else f' (through flatten layer {j})'
                fail(f'dtss/inputs {layer.inputs} name layer {k} twice{via}; a layer sums each source '
                     'once (Lava cannot connect the same ports twice)')
            origin[j] = k
        src = [layers[j] for j in layer.inputs]
        if layer.type == 'flatten':
            layer.shape = (int(np.prod(src[0].shape)),)
            continue
        shapes = {tuple(s.shape) for s in src}
        if len(shapes) != 1:
            fail(f'inputs {layer.inputs} have different shapes {sorted(shapes)}')
        in_shape = shapes.pop()
        if layer.type == 'conv':
            w = layer.params['weight']
            g = conv_geometry(layer.params)
            if len(in_shape) != 3 or in_shape[0] != w.shape[1] * g['groups']:
                fail(f'input shape {in_shape} does not match weight {w.shape} and groups = '
                     f'{g["groups"]} (in channels)')
            expect = (w.shape[0],) + tuple(
                _conv_out(in_shape[1 + a], g['dilation'][a] * (w.shape[2 + a] - 1) + 1,
                          g['stride'][a], g['padding'][a]) for a in (0, 1))
            if tuple(layer.shape) != expect:
                fail(f'shape {layer.shape} but the convolution of {in_shape} gives {expect}')
        elif layer.type == 'dense':
            if int(np.prod(in_shape)) != layer.params['weight'].shape[1]:
                fail(f'input of {int(np.prod(in_shape))} values does not match weight {layer.params["weight"].shape}')
        elif layer.type == 'attention':
            if in_shape != tuple(layer.shape):
                fail(f'q, k, v shape {in_shape} differs from the layer shape {layer.shape}')
        elif layer.type == 'readout':
            if in_shape[0] != layer.params['weight'].shape[1]:
                fail(f'input channels {in_shape[0]} do not match weight {layer.params["weight"].shape}')
