"""MNIST-family datasets from IDX files (flat Debian/original layout or torchvision's), with
clear errors for broken files; tiny fixtures written at test time, plus the real Debian
Fashion-MNIST where it is installed."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from farm.config import DatasetSpec
from farm.data import DatasetError, load_dataset
from farm.models import build_net
from farm.schema import build
from real_fixtures import idx_bytes, write_idx

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def spec(name: str, root: Path, **params) -> DatasetSpec:
    return build(DatasetSpec, {"name": name, "root": str(root), "params": params})


def everything(ds, split):
    return ds.images(split, np.arange(len(ds.labels(split))))


@pytest.mark.parametrize("layout,gz", [("flat", True), ("flat", False), ("torchvision", False)])
def test_layouts_read_the_same_images(tmp_path, layout, gz):
    ref = load_dataset(spec("fashion_mnist", write_idx(tmp_path / "ref", "flat", gz=False)))
    ds = load_dataset(spec("fashion_mnist", write_idx(tmp_path / "x", layout, gz=gz)))
    assert ds.image_shape == (1, 28, 28) and ds.num_classes == 10 and ds.class_names[0] == "T-shirt/top"
    assert (ds.mean, ds.std) == ((0.2860,), (0.3530,))
    for split, n in (("train", 60), ("test", 30)):
        x = everything(ds, split)
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.uint8
        assert torch.equal(x, everything(ref, split))
        assert ds.labels(split).tolist() == np.tile(np.arange(10), n // 10).tolist()
    assert not list(tmp_path.glob("**/processed")), "nothing is written next to the data"


@pytest.mark.parametrize("name,folder,mean", [("mnist", "MNIST", 0.1307), ("kmnist", "KMNIST", 0.1918)])
def test_mnist_and_kmnist(tmp_path, name, folder, mean):
    ds = load_dataset(spec(name, write_idx(tmp_path, "torchvision", gz=False, folder=folder)))
    assert ds.mean == (mean,) and ds.image_shape == (1, 28, 28) and len(ds.labels("test")) == 30


def test_mean_std_override_is_one_channel(tmp_path):
    ds = load_dataset(spec("mnist", write_idx(tmp_path), mean=[0.5], std=[0.25]))
    assert (ds.mean, ds.std) == ((0.5,), (0.25,))
    with pytest.raises(Exception, match="params.mean"):
        build(DatasetSpec, {"name": "mnist", "root": str(tmp_path), "params": {"mean": [0.1, 0.2, 0.3]}})


def _rewrite(path: Path, blob: bytes) -> None:
    path.write_bytes(gzip.compress(blob, mtime=0) if path.suffix == ".gz" else blob)


def test_wrong_root_and_missing_files(tmp_path):
    with pytest.raises(DatasetError, match=r"not a folder.*root"):
        load_dataset(spec("fashion_mnist", tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"does not hold the four IDX files"):
        load_dataset(spec("fashion_mnist", tmp_path / "empty"))
    root = write_idx(tmp_path / "some")
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=r"only some of the IDX files: t10k-labels-idx1-ubyte missing"):
        load_dataset(spec("fashion_mnist", root))


def test_truncated_file_is_named(tmp_path):
    root = write_idx(tmp_path)
    f = root / "train-images-idx3-ubyte.gz"
    _rewrite(f, gzip.decompress(f.read_bytes())[:-100])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz: header says 60 images.*truncated"):
        load_dataset(spec("fashion_mnist", root))
    g = write_idx(tmp_path / "g") / "t10k-images-idx3-ubyte.gz"
    g.write_bytes(g.read_bytes()[:50])  # a cut gzip stream
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.gz: cannot be read as an IDX file \(gzip\)"):
        load_dataset(spec("fashion_mnist", g.parent))


def test_wrong_magic_and_mismatched_counts(tmp_path):
    root = write_idx(tmp_path / "magic", gz=False)
    labels = (root / "train-labels-idx1-ubyte").read_bytes()
    (root / "train-images-idx3-ubyte").write_bytes(labels)  # a labels file in the images' place
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: magic number 0x00000801, expected 0x00000803"):
        load_dataset(spec("fashion_mnist", root))
    root = write_idx(tmp_path / "count", gz=False)
    (root / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(29, np.uint8), 0x801))
    with pytest.raises(DatasetError, match=r"has 30 images but .*t10k-labels-idx1-ubyte has 29 labels"):
        load_dataset(spec("fashion_mnist", root))


@pytest.mark.parametrize("arch", ["small_cnn", "resnet20"])
def test_archs_take_one_channel_28px(arch):
    net = build_net(arch, 10, (1, 28, 28)).eval()
    assert net(torch.rand(4, 1, 28, 28)).shape == (4, 10)


@pytest.mark.skipif(not DEBIAN.is_dir(), reason=f"{DEBIAN} missing: sudo apt-get install dataset-fashion-mnist")
def test_debian_fashion_mnist():
    ds = load_dataset(spec("fashion_mnist", DEBIAN))
    train, test = ds.labels("train"), ds.labels("test")
    assert (len(train), len(test)) == (60000, 10000)
    assert np.bincount(train).tolist() == [6000] * 10 and np.bincount(test).tolist() == [1000] * 10
    x = ds.images("train", np.arange(0, 60000, 60)).float() / 255
    assert x.shape == (1000, 1, 28, 28)
    assert abs(float(x.mean()) - ds.mean[0]) < 0.01 and abs(float(x.std()) - ds.std[0]) < 0.01
