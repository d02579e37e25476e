"""Tests for lava_dtss.training.data: real-format tiny files written to tmp_path."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from lava_dtss.training.data import (
    DATASETS,
    DEFAULT_FASHION_MNIST_DIR,
    DatasetError,
    DatasetInfo,
    load_dataset,
    make_loader,
)


# ---------------------------------------------------------------- helpers

def _idx_bytes(array, magic):
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">I", magic) + b"".join(
        struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def _write(path, raw, gz=True):
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        with open(path, "wb") as f:
            f.write(raw)


def _fashion_dir(tmp_path, n_train=5, n_test=3, gz=True):
    rng = np.random.RandomState(0)
    d = tmp_path / "fmnist"
    d.mkdir()
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        imgs[0, 0, 0], imgs[0, 0, 1] = 0, 255
        lbls = (np.arange(n) % 10).astype(np.uint8)
        _write(d / f"{prefix}-images-idx3-ubyte", _idx_bytes(imgs, 0x803), gz)
        _write(d / f"{prefix}-labels-idx1-ubyte", _idx_bytes(lbls, 0x801), gz)
        arrays[prefix] = (imgs, lbls)
    return d, arrays


def _cifar_batch(n, label_key, num_classes, seed):
    rng = np.random.RandomState(seed)
    data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
    labels = [int(v) for v in rng.randint(0, num_classes, size=n)]
    return {b"batch_label": b"test", label_key: labels, b"data": data,
            b"filenames": [b"x.png"] * n}


def _dump(obj, path, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _cifar10_dir(tmp_path, protocol=2):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    batches = {}
    for i in range(1, 6):
        batches[f"data_batch_{i}"] = _cifar_batch(2, b"labels", 10, i)
    batches["test_batch"] = _cifar_batch(3, b"labels", 10, 99)
    for name, b in batches.items():
        _dump(b, d / name, protocol)
    return d, batches


def _imagenet_dir(tmp_path):
    root = tmp_path / "imagenet"
    rng = np.random.RandomState(0)
    for split in ("train", "val"):
        for cls, (w, h) in (("n01440764", (300, 260)),
                            ("n01443537", (240, 320))):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for k in range(2):
                arr = rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8)
                ext = "JPEG" if k == 0 else "png"
                fmt = "JPEG" if k == 0 else "PNG"
                Image.fromarray(arr).save(folder / f"img{k}.{ext}", fmt)
    return root


# ---------------------------------------------------------------- registry

def test_registry():
    assert set(DATASETS) == {"digits", "fashion-mnist", "cifar10",
                             "cifar100", "imagenet"}
    for name, info in DATASETS.items():
        assert isinstance(info, DatasetInfo) and info.name == name
        assert len(info.image_shape) == 3 and info.description
    assert DATASETS["cifar100"].num_classes == 100
    assert DATASETS["imagenet"].num_classes == 1000
    with pytest.raises(Exception):
        DATASETS["digits"].num_classes = 3  # frozen


def test_unknown_name_and_split():
    with pytest.raises(DatasetError, match="cifar10.*digits"):
        load_dataset("mnist", "train")
    with pytest.raises(DatasetError, match="train.*test"):
        load_dataset("digits", "val")


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagenet"])
def test_missing_data_dir(name):
    with pytest.raises(DatasetError, match="--data-dir is required"):
        load_dataset(name, "train")


# ---------------------------------------------------------------- digits

def test_digits_shapes_split_and_range():
    tr = load_dataset("digits", "train")
    te = load_dataset("digits", "test")
    assert isinstance(tr, torch.utils.data.TensorDataset)
    assert len(tr) + len(te) == 1797 and len(te) == 360
    x, y = tr[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    assert isinstance(y, int) and 0 <= y < 10
    xs = tr.tensors[0]
    assert float(xs.min()) == 0.0 and float(xs.max()) == 1.0
    # stratified: every class present in the test split
    assert set(te.tensors[1].tolist()) == set(range(10))


def test_digits_deterministic():
    a = load_dataset("digits", "test", seed=0)
    b = load_dataset("digits", "test", seed=0)
    c = load_dataset("digits", "test", seed=1)
    assert torch.equal(a.tensors[0], b.tensors[0])
    assert torch.equal(a.tensors[1], b.tensors[1])
    assert not torch.equal(a.tensors[0], c.tensors[0])


# ---------------------------------------------------------------- fashion

@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_loads(tmp_path, gz):
    d, arrays = _fashion_dir(tmp_path, gz=gz)
    tr = load_dataset("fashion-mnist", "train", data_dir=str(d))
    te = load_dataset("fashion-mnist", "test", data_dir=d)
    assert len(tr) == 5 and len(te) == 3
    x, y = te[2]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert y == 2
    imgs, lbls = arrays["t10k"]
    torch.testing.assert_close(
        te.tensors[0][:, 0], torch.from_numpy(imgs).float() / 255)
    assert float(tr[0][0].min()) == 0.0 and float(tr[0][0].max()) == 1.0
    assert tr.tensors[1].tolist() == arrays["train"][1].tolist()


def test_fashion_missing_dir(tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*apt-get install"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path / "nope")


def test_fashion_missing_file(tmp_path):
    d, _ = _fashion_dir(tmp_path)
    os.remove(d / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", "test", data_dir=d)
    load_dataset("fashion-mnist", "train", data_dir=d)  # other split fine


def test_fashion_bad_magic(tmp_path):
    d, _ = _fashion_dir(tmp_path)
    # a label file where the image file should be
    _write(d / "t10k-images-idx3-ubyte",
           _idx_bytes(np.zeros(3, np.uint8), 0x801))
    with pytest.raises(DatasetError,
                       match=r"t10k-images-idx3-ubyte\.gz has magic.*0x00000803"):
        load_dataset("fashion-mnist", "test", data_dir=d)


def test_fashion_truncated(tmp_path):
    d, arrays = _fashion_dir(tmp_path)
    raw = _idx_bytes(arrays["t10k"][0], 0x803)[:-100]
    _write(d / "t10k-images-idx3-ubyte", raw)
    with pytest.raises(DatasetError, match="t10k-images.*truncated"):
        load_dataset("fashion-mnist", "test", data_dir=d)
    _write(d / "t10k-images-idx3-ubyte", raw[:10])  # header cut short
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset("fashion-mnist", "test", data_dir=d)


def test_fashion_wrong_dims_and_corrupt_gzip(tmp_path):
    d, _ = _fashion_dir(tmp_path)
    _write(d / "t10k-images-idx3-ubyte",
           _idx_bytes(np.zeros((3, 27, 27), np.uint8), 0x803))
    with pytest.raises(DatasetError, match="27x27.*28x28"):
        load_dataset("fashion-mnist", "test", data_dir=d)
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(b"not a gzip file")
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", "test", data_dir=d)


def test_fashion_label_count_mismatch_and_range(tmp_path):
    d, _ = _fashion_dir(tmp_path)
    _write(d / "t10k-labels-idx1-ubyte",
           _idx_bytes(np.zeros(2, np.uint8), 0x801))
    with pytest.raises(DatasetError, match="2 labels.*3 images"):
        load_dataset("fashion-mnist", "test", data_dir=d)
    _write(d / "t10k-labels-idx1-ubyte",
           _idx_bytes(np.array([0, 1, 10], np.uint8), 0x801))
    with pytest.raises(DatasetError, match="label 10.*0..9"):
        load_dataset("fashion-mnist", "test", data_dir=d)


def test_fashion_idx_files_with_zero_images_are_one_error(tmp_path):
    """IDX files holding 0 images (and 0 labels) gave ``ZeroDivisionError`` in
    training (issue 18): refused when read, naming the file."""
    d, _ = _fashion_dir(tmp_path)
    _write(d / "train-images-idx3-ubyte", _idx_bytes(np.zeros((0, 28, 28), np.uint8), 0x803))
    _write(d / "train-labels-idx1-ubyte", _idx_bytes(np.zeros(0, np.uint8), 0x801))
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz holds 0 images"):
        load_dataset("fashion-mnist", "train", data_dir=d)


def test_fashion_real_test_split():
    if not os.path.isdir(DEFAULT_FASHION_MNIST_DIR):
        pytest.skip(f"{DEFAULT_FASHION_MNIST_DIR} absent")
    te = load_dataset("fashion-mnist", "test")
    assert len(te) == 10000
    x, y = te[0]
    assert x.shape == (1, 28, 28) and 0 <= y < 10
    xs = te.tensors[0]
    assert 0.0 <= float(xs.min()) and float(xs.max()) <= 1.0
    assert set(te.tensors[1].tolist()) == set(range(10))


# ---------------------------------------------------------------- cifar

@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_loads(tmp_path, protocol):
    d, batches = _cifar10_dir(tmp_path, protocol)
    tr = load_dataset("cifar10", "train", data_dir=d)
    te = load_dataset("cifar10", "test", data_dir=str(d))
    assert len(tr) == 10 and len(te) == 3
    x, y = te[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    tb = batches["test_batch"]
    assert y == tb[b"labels"][1]
    expected = torch.from_numpy(tb[b"data"][1].reshape(3, 32, 32)).float()
    torch.testing.assert_close(x, expected / 255)
    # train batches concatenated in order data_batch_1..5
    assert tr.tensors[1].tolist() == sum(
        (batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert 0.0 <= float(tr.tensors[0].min()) <= float(tr.tensors[0].max()) <= 1.0


def test_cifar100_loads(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for name, n, seed in (("train", 4, 1), ("test", 2, 2)):
        b = _cifar_batch(n, b"fine_labels", 100, seed)
        b[b"coarse_labels"] = [0] * n
        _dump(b, d / name)
    tr = load_dataset("cifar100", "train", data_dir=d)
    te = load_dataset("cifar100", "test", data_dir=d)
    assert len(tr) == 4 and len(te) == 2
    assert tr[0][0].shape == (3, 32, 32)
    assert all(0 <= y < 100 for _, y in tr)


def test_cifar_missing_dir_and_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*cifar.html"):
        load_dataset("cifar10", "test", data_dir=tmp_path / "nope")
    d, _ = _cifar10_dir(tmp_path)
    os.remove(d / "data_batch_3")
    with pytest.raises(DatasetError,
                       match="data_batch_3.*cifar-10-batches-py"):
        load_dataset("cifar10", "train", data_dir=d)
    with pytest.raises(DatasetError, match="cifar-100-python"):
        load_dataset("cifar100", "train", data_dir=d)


def test_cifar_data_dir_may_be_torchvisions_root(tmp_path):
    """--data-dir accepts the parent of cifar-10-batches-py / cifar-100-python
    (torchvision's CIFAR10(root) layout) as well as the extracted folder, with the
    same images; any other folder is one error naming both layouts."""
    d, batches = _cifar10_dir(tmp_path)
    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    for name, n, seed in (("train", 4, 1), ("test", 2, 2)):
        _dump(_cifar_batch(n, b"fine_labels", 100, seed), c100 / name)
    for name, folder in (("cifar10", d), ("cifar100", c100)):
        for split in ("train", "test"):
            a = load_dataset(name, split, data_dir=folder)
            b = load_dataset(name, split, data_dir=tmp_path)      # the root
            assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"neither the extracted `cifar-10-batches-py` folder "
                                           r"\(holding data_batch_1.*test_batch\) nor torchvision's root"):
        load_dataset("cifar10", "train", data_dir=empty)
    with pytest.raises(DatasetError, match="neither the extracted `cifar-100-python`.*cifar-100-python/"):
        load_dataset("cifar100", "test", data_dir=empty)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_disallowed_pickle_class_not_executed(tmp_path):
    d, _ = _cifar10_dir(tmp_path)
    marker = tmp_path / "pwned"
    batch = _cifar_batch(3, b"labels", 10, 0)
    batch[b"labels"] = _Evil(marker)
    _dump(batch, d / "test_batch")
    with pytest.raises(DatasetError, match="test_batch.*system.*not allowed"):
        load_dataset("cifar10", "test", data_dir=d)
    assert not marker.exists()


def test_cifar_wrong_shape_dtype_keys_labels(tmp_path):
    d, _ = _cifar10_dir(tmp_path)
    path = d / "test_batch"
    bad = _cifar_batch(3, b"labels", 10, 0)
    bad[b"data"] = bad[b"data"][:, :3000]
    _dump(bad, path)
    with pytest.raises(DatasetError, match=r"test_batch.*\(3, 3000\).*3072"):
        load_dataset("cifar10", "test", data_dir=d)

    bad = _cifar_batch(3, b"labels", 10, 0)
    bad[b"data"] = bad[b"data"].astype(np.float32)
    _dump(bad, path)
    with pytest.raises(DatasetError, match="float32.*uint8"):
        load_dataset("cifar10", "test", data_dir=d)

    bad = _cifar_batch(3, b"labels", 10, 0)
    del bad[b"labels"]
    _dump(bad, path)
    with pytest.raises(DatasetError, match="no key b'labels'"):
        load_dataset("cifar10", "test", data_dir=d)

    bad = _cifar_batch(3, b"labels", 10, 0)
    bad[b"labels"] = [1, 2]
    _dump(bad, path)
    with pytest.raises(DatasetError, match="3 ints"):
        load_dataset("cifar10", "test", data_dir=d)

    bad = _cifar_batch(3, b"labels", 10, 0)
    bad[b"labels"] = [1, 2, 10]
    _dump(bad, path)
    with pytest.raises(DatasetError, match="0..9"):
        load_dataset("cifar10", "test", data_dir=d)

    path.write_bytes(b"garbage, not a pickle")
    with pytest.raises(DatasetError, match="cannot unpickle.*test_batch"):
        load_dataset("cifar10", "test", data_dir=d)


# ---------------------------------------------------------------- imagenet

def test_imagenet_imagefolder(tmp_path):
    root = _imagenet_dir(tmp_path)
    te = load_dataset("imagenet", "test", data_dir=root)
    tr = load_dataset("imagenet", "train", data_dir=str(root))
    assert len(te) == 4 and len(tr) == 4
    assert te.classes == ["n01440764", "n01443537"]
    for ds in (te, tr):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 224, 224) and x.dtype == torch.float32
            assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
            assert isinstance(y, int) and y in (0, 1)
    torch.testing.assert_close(te[0][0], te[0][0])  # test transform is fixed


def test_imagenet_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*train/<class>"):
        load_dataset("imagenet", "test", data_dir=tmp_path / "nope")
    root = tmp_path / "inet"
    (root / "train" / "n0").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"val does not exist"):
        load_dataset("imagenet", "test", data_dir=root)
    (root / "val").mkdir()
    with pytest.raises(DatasetError, match="val has no usable"):
        load_dataset("imagenet", "test", data_dir=root)
    (root / "train" / "n0" / "readme.txt").write_text("no images")
    with pytest.raises(DatasetError, match="train has no usable"):
        load_dataset("imagenet", "train", data_dir=root)


# ---------------------------------------------------------------- loader

def test_make_loader_deterministic():
    ds = load_dataset("digits", "test")

    def order(seed):
        loader = make_loader(ds, batch_size=64, shuffle=True, seed=seed)
        return torch.cat([y for _, y in loader]), loader

    a, loader = order(3)
    b, _ = order(3)
    c, _ = order(4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(loader) == 6  # 360 / 64 -> 6 batches, drop_last=False
    x, y = next(iter(loader))
    assert x.shape == (64, 1, 8, 8) and y.dtype == torch.int64
    unshuffled = make_loader(ds, batch_size=360, shuffle=False, seed=0)
    assert torch.equal(next(iter(unshuffled))[1], ds.tensors[1])


def test_make_loader_with_sampler():
    ds = load_dataset("digits", "test")
    sampler = torch.utils.data.SequentialSampler(ds)
    loader = make_loader(ds, batch_size=100, shuffle=True, seed=0,
                         sampler=sampler)
    assert torch.equal(torch.cat([y for _, y in loader]), ds.tensors[1])


def test_fashion_gzip_bomb_is_never_decompressed_whole(tmp_path, monkeypatch):
    """A valid header followed by 64 MiB of zeros (a ~64 KB gzip): the reader
    decompresses only the bytes the header declares (plus one), then refuses."""
    d, arrays = _fashion_dir(tmp_path)
    raw = _idx_bytes(arrays["t10k"][0], 0x803)
    with gzip.open(str(d / "t10k-images-idx3-ubyte.gz"), "wb") as f:
        f.write(raw)
        for _ in range(64):
            f.write(bytes(1 << 20))
    import lava_dtss.training.data
    reads = []

    class Counting(gzip.GzipFile):
        def read(self, size=-1):
            out = super().read(size)
            reads.append(len(out))
            return out
    monkeypatch.setattr(lava_dtss.training.data.gzip, "open", lambda path, mode="rb": Counting(path, mode))
    with pytest.raises(DatasetError, match=r"t10k-images.*bytes but its header"):
        load_dataset("fashion-mnist", "test", data_dir=d)
    assert sum(reads) <= len(raw) + 1, reads
