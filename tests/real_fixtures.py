"""Tiny datasets written at test time in the real on-disk formats torchvision reads.

Images are random but class-coloured (class k gets a bright channel pattern) so a model can
learn them in one epoch; every writer returns the root to put in ``datasets.<key>.root``.
"""
from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def class_images(labels: np.ndarray, h: int, w: int, seed: int) -> np.ndarray:
    """uint8 N×H×W×3: noise plus a class-dependent colour, so classes are separable."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 80, size=(len(labels), h, w, 3))
    colour = np.stack([(labels * 53) % 176, (labels * 97) % 176, (labels * 29) % 176], axis=1)
    return (base + colour[:, None, None, :]).astype(np.uint8)


def write_cifar10(root: Path, train_per_class: int = 5, test_per_class: int = 3) -> Path:
    """``root/cifar-10-batches-py``: 5 pickled train batches, test_batch, batches.meta.

    Keys are str, as Python 2 pickles read with encoding='latin1' (what torchvision does) give.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(path: Path, labels: np.ndarray, seed: int) -> None:
        x = class_images(labels, 32, 32, seed).transpose(0, 3, 1, 2).reshape(len(labels), -1)  # CIFAR row layout
        entry = {"batch_label": path.name, "labels": [int(v) for v in labels], "data": x,
                 "filenames": [f"img{i}.png" for i in range(len(labels))]}
        path.write_bytes(pickle.dumps(entry, protocol=2))

    per_batch, extra = divmod(train_per_class, 5)
    for b in range(5):
        n = per_batch + (1 if b < extra else 0)
        batch(folder / f"data_batch_{b + 1}", np.tile(np.arange(10), n), seed=b)
    batch(folder / "test_batch", np.tile(np.arange(10), test_per_class), seed=9)
    (folder / "batches.meta").write_bytes(pickle.dumps(
        {"label_names": CIFAR_NAMES, "num_cases_per_batch": 10, "num_vis": 3072}, protocol=2))
    return root


def write_svhn(root: Path, train_per_class: int = 5, test_per_class: int = 3) -> Path:
    """``root/{train,test}_32x32.mat``: X is 32×32×3×N uint8, y is N×1 with 10 meaning digit 0."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", train_per_class, 0), ("test", test_per_class, 1)):
        digits = np.tile(np.arange(10), n)
        x = class_images(digits, 32, 32, seed).transpose(1, 2, 3, 0)
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
    return root


def write_gtsrb(root: Path, train_per_class: int = 2, test_per_class: int = 1, classes: int = 43) -> Path:
    """``root/gtsrb``: Training/<5-digit class>/*.ppm with per-class CSVs, Final_Test/Images/*.ppm
    and GT-final_test.csv (';'-separated, as the official release); images of varying size."""
    base = root / "gtsrb"
    fields = ["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"]
    rng = np.random.default_rng(0)
    test_rows = []
    test_dir = base / "GTSRB/Final_Test/Images"
    test_dir.mkdir(parents=True)
    for k in range(classes):
        folder = base / "GTSRB/Training" / f"{k:05d}"
        folder.mkdir(parents=True)
        rows = []
        for i in range(train_per_class + test_per_class):
            size = int(rng.integers(20, 48))
            img = class_images(np.array([k]), size, size + 3, seed=k * 100 + i)[0]
            name = f"00000_{i:05d}.ppm"
            row = [name, size + 3, size, 1, 1, size + 1, size - 2, k]
            if i < train_per_class:
                Image.fromarray(img).save(folder / name)
                rows.append(row)
            else:
                name = f"{len(test_rows):05d}.ppm"
                Image.fromarray(img).save(test_dir / name)
                test_rows.append([name, *row[1:]])
        with open(folder / f"GT-{k:05d}.csv", "w", newline="") as f:
            csv.writer(f, delimiter=";").writerows([fields, *rows])
    with open(base / "GT-final_test.csv", "w", newline="") as f:
        csv.writer(f, delimiter=";").writerows([fields, *test_rows])
    return root


def write_imagefolder(root: Path, classes: int = 3, train_per_class: int = 4, val_per_class: int = 2) -> Path:
    """``root/{train,val}/<wnid>/*.png`` (ImageNet layout), images of varying size."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for k in range(classes):
            folder = root / split / f"n{k:08d}"
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = int(rng.integers(40, 60)), int(rng.integers(40, 60))
                Image.fromarray(class_images(np.array([k]), h, w, seed=k * 10 + i)[0]).save(folder / f"img_{i}.png")
    return root


def write_trojai(root: Path, model, classes: int = 3, per_class: int = 4, poisoned: bool | None = True,
                 target: int = 1) -> Path:
    """A TrojAI-style folder: TorchScript ``model.pt``, ``clean_example_data/class_<k>_example_<i>.png``,
    ``ground_truth.csv`` and ``config.json`` (``poisoned=None`` writes no ground truth)."""
    import json

    import torch

    folder = root / "clean_example_data"
    folder.mkdir(parents=True)
    for k in range(classes):
        for i in range(per_class):
            img = class_images(np.array([k]), 32, 32, seed=k * 10 + i)[0]
            Image.fromarray(img).save(folder / f"class_{k}_example_{i}.png")
    torch.jit.save(torch.jit.trace(model.eval(), torch.rand(1, 3, 32, 32)), str(root / "model.pt"))
    if poisoned is not None:
        (root / "ground_truth.csv").write_text("1\n" if poisoned else "0\n")
        (root / "config.json").write_text(json.dumps({"POISONED": poisoned, "TRIGGER_TARGET_CLASS": target}))
    return root


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An IDX file: big-endian magic, one big-endian uint32 per dimension, then the uint8 data."""
    import struct

    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_idx(root: Path, layout: str = "flat", gz: bool = True, train_per_class: int = 6, test_per_class: int = 3,
              folder: str = "FashionMNIST") -> Path:
    """The four MNIST-family IDX files, as Debian/the original releases ship them (``flat``:
    root/train-images-idx3-ubyte.gz ...) or as torchvision keeps them (``torchvision``:
    root/<folder>/raw/train-images-idx3-ubyte, uncompressed). Grey 28×28 class-shaded images."""
    import gzip

    target = root if layout == "flat" else root / folder / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", train_per_class, 0), ("t10k", test_per_class, 1)):
        labels = np.tile(np.arange(10), n)
        images = class_images(labels, 28, 28, seed)[..., 0]  # N×28×28, first colour channel
        for kind, data, magic in (("images-idx3", images, 0x803), ("labels-idx1", labels, 0x801)):
            blob = idx_bytes(data, magic)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (target / f"{name}.gz").write_bytes(gzip.compress(blob, mtime=0))
            else:
                (target / name).write_bytes(blob)
    return root
