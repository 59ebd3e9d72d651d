"""MNIST, Fashion-MNIST and KMNIST: 1×28×28 grey images in the original IDX files.

The images are read by torchvision's own MNIST loaders, from a ``root`` in either layout:

* torchvision's: ``root/<MNIST|FashionMNIST|KMNIST>/raw/<four files>`` (what ``download: true``
  leaves behind);
* flat, as the original releases and Debian ship them (``apt-get install dataset-fashion-mnist``
  puts the four ``.gz`` files in ``/usr/share/datasets/fashion-mnist``):
  ``root/train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
  ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``.

torchvision 0.29 reads only uncompressed files at ``raw_folder`` and checks headers with bare
asserts, so this module (1) finds the four files, (2) checks each header against its size and
its partner (magic number, 28×28, image count = label count, file not truncated) to give an
error that names the file and the fix, and (3) points torchvision's class at them, decompressing
``.gz`` files into a temporary folder that is removed once the arrays are in memory.
Images are used natively (1 channel, 28×28): every architecture takes the channel count.
"""
from __future__ import annotations

import gzip
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from farm.data.registry import register
from farm.data.base import Split
from farm.errors import DatasetError
from farm.data.torchvision_sets import TorchvisionDataset

if TYPE_CHECKING:
    from farm.config import DatasetSpec

IMAGES_MAGIC, LABELS_MAGIC = 0x803, 0x801  # IDX: unsigned byte, 3 resp. 1 dimensions
SIDE = 28
PREFIX = {"train": "train", "test": "t10k"}


@dataclass(frozen=True)
class GreyParams:
    """Single-channel statistics override (null: the dataset's standard values)."""

    mean: tuple[float] | None = None
    std: tuple[float] | None = None

    def check(self) -> list[str]:
        if self.std is not None and min(self.std) <= 0:
            return [f"std: every value must be > 0, got {list(self.std)}"]
        return []


def file_names(split: Split) -> tuple[str, str]:
    return f"{PREFIX[split]}-images-idx3-ubyte", f"{PREFIX[split]}-labels-idx1-ubyte"


def _stream(path: Path) -> Any:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def idx_header(path: Path) -> tuple[int, list[int], int]:
    """(magic, dims, payload bytes actually present) of an IDX file, ``.gz`` or not."""
    try:
        with _stream(path) as f:
            head = f.read(4)
            if len(head) < 4:
                raise DatasetError([f"{path}: {len(head)} bytes, too short for an IDX header (truncated?)"])
            magic = struct.unpack(">I", head)[0]
            nd = magic & 0xFF
            dims_raw = f.read(4 * nd) if 1 <= nd <= 3 else b""
            if not 1 <= nd <= 3:
                return magic, [], 0  # not an IDX file we read: check_split reports the magic number
            if len(dims_raw) < 4 * nd:
                raise DatasetError([f"{path}: the IDX header is cut short (truncated file); re-download it"])
            dims = list(struct.unpack(f">{nd}I", dims_raw))
            payload = 0
            while chunk := f.read(1 << 20):
                payload += len(chunk)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DatasetError([f"{path}: cannot be read as an IDX file{' (gzip)' if path.suffix == '.gz' else ''} "
                            f"({exc}); re-download or re-install it"]) from None
    return magic, dims, payload


def check_split(images: Path, labels: Path) -> int:
    """Check one split's pair of IDX files; return its image count. Errors name the file."""
    fix = "re-download the file or re-install the package that ships it"
    img_magic, img_dims, img_bytes = idx_header(images)
    if img_magic != IMAGES_MAGIC:
        raise DatasetError([f"{images}: magic number {img_magic:#010x}, expected {IMAGES_MAGIC:#010x} "
                            f"(ubyte images, 3 dims); is this an images file? {fix}"])
    lab_magic, lab_dims, lab_bytes = idx_header(labels)
    if lab_magic != LABELS_MAGIC:
        raise DatasetError([f"{labels}: magic number {lab_magic:#010x}, expected {LABELS_MAGIC:#010x} "
                            f"(ubyte labels, 1 dim); is this a labels file? {fix}"])
    n, h, w = img_dims
    if (h, w) != (SIDE, SIDE):
        raise DatasetError([f"{images}: images are {h}×{w}, expected {SIDE}×{SIDE}"])
    if img_bytes != n * h * w:
        raise DatasetError([f"{images}: header says {n} images of {h}×{w} = {n * h * w} bytes, the file holds "
                            f"{img_bytes} (truncated or padded); {fix}"])
    if lab_bytes != lab_dims[0]:
        raise DatasetError([f"{labels}: header says {lab_dims[0]} labels, the file holds {lab_bytes} (truncated or "
                            f"padded); {fix}"])
    if lab_dims[0] != n:
        raise DatasetError([f"{images} has {n} images but {labels} has {lab_dims[0]} labels: the files do not "
                            f"belong together (mixed releases?); {fix}"])
    return n


class IDXDataset(TorchvisionDataset):
    """One of torchvision's MNIST-family datasets, read from either layout (module docstring)."""

    Params = GreyParams
    tv_class: ClassVar[str]  # torchvision.datasets class name, also its folder name under root
    expected = ("the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                "t10k-labels-idx1-ubyte; .gz or not), directly or under <MNIST|FashionMNIST|KMNIST>/raw/")

    @classmethod
    def known_num_classes(cls, spec: "DatasetSpec") -> int | None:
        return 10

    def __init__(self, spec: "DatasetSpec", params: GreyParams):
        self._tmp: tempfile.TemporaryDirectory | None = None
        try:
            super().__init__(spec, params)
        finally:
            if self._tmp is not None:  # arrays are in memory now
                self._tmp.cleanup()
        self.num_classes, self.image_shape = 10, (1, SIDE, SIDE)
        self.class_names = list(self._sets["train"].classes)

    def _candidates(self, name: str) -> list[Path]:
        raw = self.root / self.tv_class / "raw"
        return [raw / name, self.root / name, self.root / f"{name}.gz", raw / f"{name}.gz"]

    def _find(self, name: str) -> Path | None:
        return next((p for p in self._candidates(name) if p.is_file()), None)

    def _present(self) -> bool:
        if not self.root.is_dir():
            raise self._error(f"root {self.root} is not a folder; set datasets.<key>.root to the folder that holds "
                              f"{self.expected}")
        missing = [n for s in PREFIX for n in file_names(s) if self._find(n) is None]  # type: ignore[arg-type]
        if missing and len(missing) < 4:
            raise self._error(f"{self.root} holds only some of the IDX files: {', '.join(missing)} missing "
                              f"(looked for them as {', '.join(str(p) for p in self._candidates(missing[0]))})")
        for split in PREFIX if not missing else ():
            check_split(*(self._find(n) for n in file_names(split)))  # type: ignore[arg-type]
        return not missing

    def _open(self, split: Split, download: bool) -> Any:
        import torchvision.datasets as tvd

        tv = getattr(tvd, self.tv_class)
        if download and not self._present():
            return tv(str(self.root), train=split == "train", download=True)
        folder = self._raw_folder()
        reader = type(f"Local{tv.__name__}", (tv,), {"raw_folder": property(lambda _self: str(folder)),
                                                     "processed_folder": property(lambda _self: str(folder))})
        return reader(str(self.root), train=split == "train")

    def _raw_folder(self) -> Path:
        """The folder torchvision reads (it wants all four files there, uncompressed): the
        files' own folder, or a temporary one holding them decompressed."""
        files = [self._find(n) for s in PREFIX for n in file_names(s)]  # type: ignore[arg-type]
        assert all(files), "found and checked by _present"
        if all(f.suffix != ".gz" for f in files) and len({f.parent for f in files}) == 1:
            return files[0].parent
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="farm-idx-")
            for f in files:
                with _stream(f) as src, open(Path(self._tmp.name) / f.name.removesuffix(".gz"), "wb") as dst:
                    shutil.copyfileobj(src, dst)
        return Path(self._tmp.name)

    def _split_labels(self, split: Split) -> Any:
        return self._sets[split].targets.numpy()

    def images(self, split: Split, indices: np.ndarray) -> torch.Tensor:
        data = self._sets[split].data  # N×28×28 uint8, parsed by torchvision
        return data[torch.as_tensor(np.asarray(indices, dtype=np.int64))].unsqueeze(1).contiguous()


@register
class MNIST(IDXDataset):
    name, tv_class = "mnist", "MNIST"
    standard_mean, standard_std = (0.1307,), (0.3081,)
    uap_eps = 0.3  # docs/methods.md "uap": rule for datasets the paper does not cover


@register
class FashionMNIST(IDXDataset):
    name, tv_class = "fashion_mnist", "FashionMNIST"
    standard_mean, standard_std = (0.2860,), (0.3530,)
    uap_eps = 0.3  # docs/methods.md "uap": rule for datasets the paper does not cover


@register
class KMNIST(IDXDataset):
    name, tv_class = "kmnist", "KMNIST"
    standard_mean, standard_std = (0.1918,), (0.3483,)
    uap_eps = 0.3  # docs/methods.md "uap": rule for datasets the paper does not cover
