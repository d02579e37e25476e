"""Dataset loaders for the spiking vision transformer.

Every loader returns a ``torch.utils.data.Dataset`` whose items are
``(image, label)``:

* ``image``: ``torch.float32`` tensor, layout ``[C, H, W]``, values in
  ``[0, 1]`` (raw intensity / max intensity; no mean/std normalisation).
* ``label``: Python ``int`` in ``0 .. num_classes - 1``.

Nothing is ever downloaded.  Files must already be on disk; every bad input
(unknown name/split, missing directory or file, corrupt or malformed file)
raises :class:`DatasetError` with a message naming the offending path and
saying what was expected and how to obtain it.
"""

from __future__ import annotations

import gzip
import zlib
import importlib
import os
import pickle
import random
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

__all__ = [
    "DatasetInfo",
    "DATASETS",
    "SPLITS",
    "DatasetError",
    "DEFAULT_FASHION_MNIST_DIR",
    "dataset_info",
    "load_dataset",
    "make_loader",
    "holdout_split",
]


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset.

    ``image_shape`` is ``(C, H, W)`` of the tensors the loader yields.
    """

    name: str
    num_classes: int
    image_shape: Tuple[int, int, int]
    description: str


DATASETS: Dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "digits", 10, (1, 8, 8),
        "scikit-learn 8x8 handwritten digits (1797 images, bundled, "
        "stratified 80/20 split)"),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 10, (1, 28, 28),
        "Fashion-MNIST 28x28 grayscale clothing images (60000 train / "
        "10000 test, IDX files)"),
    "cifar10": DatasetInfo(
        "cifar10", 10, (3, 32, 32),
        "CIFAR-10 32x32 RGB images (50000 train / 10000 test, python "
        "pickle batches)"),
    "cifar100": DatasetInfo(
        "cifar100", 100, (3, 32, 32),
        "CIFAR-100 32x32 RGB images, 100 fine labels (50000 train / "
        "10000 test, python pickle batches)"),
    "imagenet": DatasetInfo(
        "imagenet", 1000, (3, 224, 224),
        "ImageNet ILSVRC-2012 as an ImageFolder tree (train/, val/), "
        "224x224 crops"),
}

SPLITS = ("train", "test")

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_MAX_IDX_ITEMS = 1_000_000   # items an IDX file may declare (Fashion-MNIST: 60,000)

_FASHION_HELP = (
    "Install the Debian package with `apt-get install dataset-fashion-mnist` "
    f"(files land in {DEFAULT_FASHION_MNIST_DIR}) or pass --data-dir pointing "
    "at a directory holding the four IDX files train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz (uncompressed names without .gz also work)."
)
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_CIFAR_HELP = {
    "cifar10": (
        f"Download the CIFAR-10 python version from {_CIFAR_URL}, extract it "
        "and pass --data-dir pointing at the extracted `cifar-10-batches-py` "
        "folder (containing data_batch_1..data_batch_5 and test_batch) or at "
        "its parent (torchvision's CIFAR10 root)."),
    "cifar100": (
        f"Download the CIFAR-100 python version from {_CIFAR_URL}, extract it "
        "and pass --data-dir pointing at the extracted `cifar-100-python` "
        "folder (containing train and test) or at its parent (torchvision's "
        "CIFAR100 root)."),
}
_IMAGENET_HELP = (
    "Expected an ImageFolder tree: DIR/train/<class>/*.JPEG and "
    "DIR/val/<class>/*.JPEG (one sub-folder per class); pass --data-dir DIR."
)


class DatasetError(ValueError):
    """Raised for every bad dataset input (name, split, path, file content)."""


def dataset_info(name: str) -> DatasetInfo:
    """Return ``DATASETS[name]``; :class:`DatasetError` if unknown."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise DatasetError(
            f"unknown dataset {name!r}; valid choices: "
            f"{', '.join(sorted(DATASETS))}") from None


class _ImageLabelDataset(TensorDataset):
    """``TensorDataset`` of (float32 images [N,C,H,W], int64 labels [N]).

    Items are ``(image [C,H,W] float32, label int)``.
    """

    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        return image, int(label)


def _make_tensor_dataset(images: np.ndarray, labels: np.ndarray,
                         scale: float) -> _ImageLabelDataset:
    x = torch.from_numpy(np.array(images, dtype=np.float32))  # own copy
    x.mul_(1.0 / scale)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())
    return _ImageLabelDataset(x, y)


# --------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------

def _load_digits(split: str, seed: int) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.images.astype(np.float32).reshape(-1, 1, 8, 8)  # 0..16
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y)
    if split == "train":
        return _make_tensor_dataset(x_tr, y_tr, 16.0)
    return _make_tensor_dataset(x_te, y_te, 16.0)


# --------------------------------------------------------------------------
# fashion-mnist (IDX)
# --------------------------------------------------------------------------

_IDX_IMAGES_MAGIC = 0x00000803  # uint8, 3 dims
_IDX_LABELS_MAGIC = 0x00000801  # uint8, 1 dim


def _read_idx(path: str, magic: int) -> np.ndarray:
    """Read one (optionally gzipped) IDX file of uint8 data, validating it.

    The header is read and checked first; then exactly the bytes it declares
    (plus one, to detect trailing data) are read, so a corrupt or malicious
    file (e.g. a gzip bomb) is never decompressed whole."""
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(header)
            if len(head) < 4:
                raise DatasetError(
                    f"IDX file {path} is truncated ({len(head)} bytes, no header). "
                    f"{_FASHION_HELP}")
            got_magic = int.from_bytes(head[:4], "big")
            if got_magic != magic:
                raise DatasetError(
                    f"IDX file {path} has magic number 0x{got_magic:08x}, expected "
                    f"0x{magic:08x} ({'images' if ndim == 3 else 'labels'}). "
                    f"{_FASHION_HELP}")
            if len(head) < header:
                raise DatasetError(
                    f"IDX file {path} is truncated ({len(head)} bytes, header needs "
                    f"{header}). {_FASHION_HELP}")
            dims = [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big")
                    for i in range(ndim)]
            if ndim == 3 and tuple(dims[1:]) != (28, 28):
                raise DatasetError(
                    f"IDX file {path} holds images of size {dims[1]}x{dims[2]}, "
                    f"expected 28x28. {_FASHION_HELP}")
            if dims[0] > _MAX_IDX_ITEMS:
                raise DatasetError(
                    f"IDX file {path} declares {dims[0]} items, more than the "
                    f"{_MAX_IDX_ITEMS} a Fashion-MNIST split can hold. {_FASHION_HELP}")
            size = int(np.prod(dims, dtype=np.int64))
            body = f.read(size + 1)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DatasetError(
            f"cannot read IDX file {path}: {e}. {_FASHION_HELP}") from e
    if len(body) != size:
        raise DatasetError(
            f"IDX file {path} has {header + len(body)}{'+' if len(body) > size else ''} bytes but its "
            f"header (dims {dims}) implies {header + size}; the file is truncated or "
            f"corrupt. {_FASHION_HELP}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find_idx(data_dir: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise DatasetError(
        f"missing fashion-mnist file {os.path.join(data_dir, stem + '.gz')} "
        f"(or uncompressed {stem}). {_FASHION_HELP}")


def _load_fashion_mnist(split: str, data_dir: Optional[str]) -> Dataset:
    data_dir = DEFAULT_FASHION_MNIST_DIR if data_dir is None else data_dir
    if not os.path.isdir(data_dir):
        raise DatasetError(
            f"fashion-mnist directory {data_dir} does not exist. "
            f"{_FASHION_HELP}")
    prefix = "train" if split == "train" else "t10k"
    img_path = _find_idx(data_dir, f"{prefix}-images-idx3-ubyte")
    lbl_path = _find_idx(data_dir, f"{prefix}-labels-idx1-ubyte")
    images = _read_idx(img_path, _IDX_IMAGES_MAGIC)
    labels = _read_idx(lbl_path, _IDX_LABELS_MAGIC)
    if images.shape[0] == 0:
        raise DatasetError(
            f"IDX file {img_path} holds 0 images; a Fashion-MNIST split needs at "
            f"least one. {_FASHION_HELP}")
    if labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"label file {lbl_path} has {labels.shape[0]} labels but image "
            f"file {img_path} has {images.shape[0]} images; they must match. "
            f"{_FASHION_HELP}")
    if labels.size and int(labels.max()) > 9:
        raise DatasetError(
            f"label file {lbl_path} contains label {int(labels.max())}, "
            f"expected labels in 0..9. {_FASHION_HELP}")
    return _make_tensor_dataset(images.reshape(-1, 1, 28, 28), labels, 255.0)


# --------------------------------------------------------------------------
# cifar (restricted pickle)
# --------------------------------------------------------------------------

# (module, name) pairs a pickled numpy uint8 array / python list may need.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),   # protocol 5
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes pickled by python 3 with protocol < 3
}


def _resolve_allowed(module: str, name: str):
    candidates = [module]
    if module.startswith("numpy._core"):
        candidates.append("numpy.core" + module[len("numpy._core"):])
    elif module.startswith("numpy.core"):
        candidates.append("numpy._core" + module[len("numpy.core"):])
    last = None
    for mod in candidates:
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError) as e:
            last = e
    raise pickle.UnpicklingError(f"cannot resolve {module}.{name}: {last}")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the globals numpy arrays need."""

    def __init__(self, file, path: str):
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module, name):
        if (module, name) not in _PICKLE_ALLOWED:
            raise DatasetError(
                f"refusing to unpickle {self._path}: it references "
                f"{module}.{name}, which is not allowed (only numpy arrays, "
                "lists, dicts, ints and bytes are accepted in CIFAR batches)")
        return _resolve_allowed(module, name)

    def persistent_load(self, pid):
        raise DatasetError(
            f"refusing to unpickle {self._path}: persistent ids are not "
            "allowed")


def _safe_unpickle(path: str, help_text: str):
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path).load()
    except DatasetError:
        raise
    except Exception as e:  # any parse error of untrusted input
        raise DatasetError(
            f"cannot unpickle CIFAR batch {path}: {type(e).__name__}: {e}. "
            f"{help_text}") from e


def _load_cifar_batch(path: str, label_key: str, num_classes: int,
                      help_text: str) -> Tuple[np.ndarray, np.ndarray]:
    if not os.path.isfile(path):
        raise DatasetError(f"missing CIFAR batch file {path}. {help_text}")
    obj = _safe_unpickle(path, help_text)
    if not isinstance(obj, dict):
        raise DatasetError(
            f"CIFAR batch {path} holds a {type(obj).__name__}, expected a "
            f"dict with keys b'data' and b'{label_key}'. {help_text}")
    entries = {(k.decode("latin1") if isinstance(k, bytes) else k): v
               for k, v in obj.items()}
    for key in ("data", label_key):
        if key not in entries:
            raise DatasetError(
                f"CIFAR batch {path} has no key b'{key}' (keys: "
                f"{sorted(map(str, entries))}). {help_text}")
    data = entries["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = (f"array of dtype {data.dtype}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise DatasetError(
            f"CIFAR batch {path}: b'data' is a {kind}, expected a uint8 "
            f"numpy array of shape [N, 3072]. {help_text}")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"CIFAR batch {path}: b'data' has shape {tuple(data.shape)}, "
            f"expected [N, 3072] (3x32x32 channel-major). {help_text}")
    try:
        labels = np.asarray(entries[label_key])
    except Exception as e:
        raise DatasetError(
            f"CIFAR batch {path}: b'{label_key}' is not a label list: {e}. "
            f"{help_text}") from e
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or (
            labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise DatasetError(
            f"CIFAR batch {path}: b'{label_key}' must be a list of "
            f"{data.shape[0]} ints (one per image), got shape "
            f"{tuple(labels.shape)} dtype {labels.dtype}. {help_text}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(
            f"CIFAR batch {path}: labels must be in 0..{num_classes - 1}, "
            f"got range {int(labels.min())}..{int(labels.max())}. "
            f"{help_text}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


_CIFAR_FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_FILES = {"cifar10": tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",),
                "cifar100": ("train", "test")}


def cifar_folder(name: str, data_dir: str) -> str:
    """The folder holding the batch files of ``name`` (cifar10 or cifar100):
    ``data_dir`` itself when it is the extracted folder (it holds any of the
    batch files), or ``data_dir/cifar-10-batches-py`` (``cifar-100-python``)
    when it is torchvision's root (``torchvision.datasets.CIFAR10(root)``).
    :class:`DatasetError` naming both layouts otherwise."""
    help_text = _CIFAR_HELP[name]
    if not os.path.isdir(data_dir):
        raise DatasetError(
            f"{name} directory {data_dir} does not exist. {help_text}")
    if any(os.path.isfile(os.path.join(data_dir, f)) for f in _CIFAR_FILES[name]):
        return data_dir
    sub = os.path.join(data_dir, _CIFAR_FOLDER[name])
    if os.path.isdir(sub):
        return sub
    raise DatasetError(
        f"{name}: --data-dir {data_dir} is neither the extracted "
        f"`{_CIFAR_FOLDER[name]}` folder (holding {', '.join(_CIFAR_FILES[name])}) "
        f"nor torchvision's root folder (holding {_CIFAR_FOLDER[name]}/). {help_text}")


def _load_cifar(name: str, split: str, data_dir: str) -> Dataset:
    help_text = _CIFAR_HELP[name]
    data_dir = cifar_folder(name, data_dir)
    if name == "cifar10":
        files = ([f"data_batch_{i}" for i in range(1, 6)]
                 if split == "train" else ["test_batch"])
        label_key, num_classes = "labels", 10
    else:
        files = ["train" if split == "train" else "test"]
        label_key, num_classes = "fine_labels", 100
    parts = [_load_cifar_batch(os.path.join(data_dir, f), label_key,
                               num_classes, help_text) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return _make_tensor_dataset(images, labels, 255.0)


# --------------------------------------------------------------------------
# imagenet (ImageFolder)
# --------------------------------------------------------------------------

def _load_imagenet(split: str, data_dir: str, transform=None) -> Dataset:
    from torchvision import datasets, transforms

    if not os.path.isdir(data_dir):
        raise DatasetError(
            f"imagenet directory {data_dir} does not exist. {_IMAGENET_HELP}")
    folder = os.path.join(data_dir, "train" if split == "train" else "val")
    if not os.path.isdir(folder):
        raise DatasetError(
            f"imagenet split folder {folder} does not exist. "
            f"{_IMAGENET_HELP}")
    if transform is not None:
        tf = transform
    elif split == "train":
        tf = transforms.Compose([
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ])
    else:
        tf = transforms.Compose([
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
        ])
    try:
        return datasets.ImageFolder(folder, transform=tf)
    except (FileNotFoundError, OSError) as e:
        raise DatasetError(
            f"imagenet folder {folder} has no usable class sub-folders or "
            f"images: {e}. {_IMAGENET_HELP}") from e


# --------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------

def load_dataset(name: str, split: str, data_dir: Optional[str] = None,
                 seed: int = 0, transform=None) -> Dataset:
    """Load split ``'train'`` or ``'test'`` of dataset ``name``.

    Items are ``(image, label)``: ``image`` float32 ``[C, H, W]`` in
    ``[0, 1]`` (shape ``DATASETS[name].image_shape``), ``label`` an int.

    ``data_dir``: ignored for ``digits``; defaults to
    ``/usr/share/datasets/fashion-mnist`` for ``fashion-mnist``; required
    for ``cifar10``, ``cifar100`` and ``imagenet`` (``imagenet`` uses
    ``data_dir/train`` for 'train' and ``data_dir/val`` for 'test').
    ``seed`` only affects the ``digits`` train/test split. ``transform``
    (``imagenet`` only): the PIL transform in place of the default one (the
    Spikformer recipes pass timm's).

    Raises :class:`DatasetError` for any bad input.
    """
    dataset_info(name)
    if split not in SPLITS:
        raise DatasetError(
            f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    if transform is not None and name != "imagenet":
        raise DatasetError(f"transform applies to imagenet only, not {name!r}")
    if data_dir is not None:
        data_dir = os.fspath(data_dir)
    if name == "digits":
        return _load_digits(split, seed)
    if name == "fashion-mnist":
        return _load_fashion_mnist(split, data_dir)
    if data_dir is None:
        help_text = _CIFAR_HELP.get(name, _IMAGENET_HELP)
        raise DatasetError(
            f"dataset {name!r} needs its files on disk: --data-dir is "
            f"required. {help_text}")
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, split, data_dir)
    return _load_imagenet(split, data_dir, transform)


def holdout_split(dataset: Dataset, size: int, seed: int = 0):
    """``(rest, held_out)``: ``size`` items of ``dataset`` chosen by a fixed random
    permutation (``seed``), e.g. a validation set carved from the training set."""
    n = len(dataset)
    if not 0 < size < n:
        raise DatasetError(f"validation size must be in 1..{n - 1} for a training set of {n} "
                           f"images, got {size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return (torch.utils.data.Subset(dataset, sorted(perm[size:])),
            torch.utils.data.Subset(dataset, sorted(perm[:size])))


def _seed_worker(worker_id: int) -> None:
    """Seed numpy/random in a DataLoader worker from its torch seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int,
                num_workers: int = 0,
                sampler: Optional[Sampler] = None, drop_last: bool = False) -> DataLoader:
    """Deterministic ``DataLoader`` (``drop_last`` False by default; the
    Spikformer recipes drop the last, partial batch, as timm's loader does).

    Shuffling order and worker RNGs derive from a ``torch.Generator`` seeded
    with ``seed``.  Batches are ``(images [B, C, H, W] float32,
    labels [B] int64)``.  If ``sampler`` is given it decides the order and
    ``shuffle`` is ignored (e.g. a ``DistributedSampler`` shuffles itself).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=bool(shuffle) if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        generator=generator,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        drop_last=drop_last,
    )


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None,
                 flip: bool = False) -> torch.Tensor:
    """Training augmentation on a batch ``[N, C, H, W]``: shift each image by up
    to ``pad`` pixels (zero padding, then a random crop of the original size)
    and, with ``flip``, mirror it horizontally with probability 1/2."""
    if pad <= 0 and not flip:
        return images
    n, _, h, w = images.shape
    out = images
    if pad > 0:
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h))           # [N, H]
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w))           # [N, W]
        idx_n = torch.arange(n).view(n, 1, 1)
        out = padded.permute(0, 2, 3, 1)[idx_n, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        out = torch.where(mask.view(n, 1, 1, 1), out.flip(-1), out)
    return out.contiguous()
