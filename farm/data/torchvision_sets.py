"""Real datasets through torchvision's own loaders: CIFAR-10, SVHN, GTSRB, ImageFolder.

Users benchmark models trained on the paper's datasets, so the files are read by the code
those users already trust (``torchvision.datasets``), from a local ``root``; ``download: true``
lets torchvision fetch them on machines with internet. Each class only adapts torchvision's
dataset to the :class:`~farm.data.base.Dataset` contract:

* ``labels(split)`` never decodes an image (CIFAR-10 ``.targets``, SVHN ``.labels``, GTSRB's
  sample list, ImageFolder ``.targets``);
* ``images(split, indices)`` returns uint8 N×C×H×W. Array-backed sets (CIFAR-10, SVHN) index
  the arrays torchvision parsed; file-backed sets (GTSRB, ImageFolder) decode only the requested
  files through torchvision's ``__getitem__`` (PIL, RGB) and resize to one fixed size, because
  their images vary in size and a model takes one shape;
* ``mean``/``std`` are the dataset's usual statistics, applied inside the model wrapper so
  triggers live in [0,1] pixel space for every method; ``params.mean``/``params.std`` override
  them for checkpoints trained with other values.

Splits: "train" is the pool the attack images are drawn from (METHODS.md allows train/val
data; none of these sets ships a validation split, so train stands for train+val) and "test"
holds the held-out images (ImageFolder: ``val/`` by default, as ImageNet's 50 val images per
class are METHODS.md's held-out set).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from farm.data.registry import register
from farm.data.base import Dataset, Split
from farm.errors import DatasetError

if TYPE_CHECKING:
    from farm.config import DatasetSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class NormParams:
    """Per-channel statistics override (null: the dataset's standard values)."""

    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def check(self) -> list[str]:
        if self.std is not None and min(self.std) <= 0:
            return [f"std: every value must be > 0, got {list(self.std)}"]
        return []


@dataclass(frozen=True)
class ArchiveParams(NormParams):
    # torchvision checks the md5 of CIFAR-10 / SVHN files against the official release;
    # false accepts re-packed copies (same format, other bytes), e.g. the test fixtures.
    verify_md5: bool = True


@dataclass(frozen=True)
class GTSRBParams(NormParams):
    image_size: int = 32  # GTSRB images are 15..250 px; resized (not cropped) to this square

    def check(self) -> list[str]:
        return super().check() + ([] if self.image_size >= 8 else [f"image_size: must be >= 8, got {self.image_size}"])


@dataclass(frozen=True)
class ImageFolderParams(NormParams):
    image_size: int = 224  # side of the centre crop the model sees
    resize: int | None = 256  # shorter side before the crop [REC, ImageNet eval]; null: resize to image_size²
    train_dir: str = "train"  # attack images come from root/<train_dir>
    test_dir: str = "val"  # held-out images come from root/<test_dir>

    def check(self) -> list[str]:
        out = super().check()
        if self.image_size < 8:
            out.append(f"image_size: must be >= 8, got {self.image_size}")
        if self.resize is not None and self.resize < self.image_size:
            out.append(f"resize: {self.resize} is smaller than image_size {self.image_size}")
        return out


class TorchvisionDataset(Dataset):
    """Shared plumbing: root checks, one torchvision dataset per split, statistics."""

    standard_mean: ClassVar[tuple[float, ...]]
    standard_std: ClassVar[tuple[float, ...]]
    expected: ClassVar[str]  # what must be under root, for error messages

    @classmethod
    def check_spec(cls, spec: "DatasetSpec") -> list[str]:
        if spec.root is None:
            return [f"root: dataset {cls.name!r} reads local files; set root to the folder that holds "
                    f"{cls.expected} (with download: true torchvision fetches them there)"]
        return []

    def __init__(self, spec: "DatasetSpec", params: Any):
        if spec.root is None:
            raise self._error(f"root is not set; set datasets.<key>.root to the folder that holds {self.expected} "
                              "(add download: true to fetch them there)")
        self.root = Path(spec.root).expanduser()
        self.params = params
        if not spec.download and not self._present():
            raise self._error(f"{self.root} does not hold {self.expected}; set datasets.<key>.root to the "
                              "folder that does, or download: true on a machine with internet")
        try:
            self._sets = {split: self._open(split, spec.download) for split in ("train", "test")}
        except RuntimeError as exc:
            raise self._error(f"torchvision could not read {self.root}: {exc}{self._hint()}") from None
        self.mean = tuple(float(v) for v in (params.mean or self.standard_mean))
        self.std = tuple(float(v) for v in (params.std or self.standard_std))
        self._labels = {s: np.asarray(self._split_labels(s), dtype=np.int64) for s in self._sets}
        for split, labels in self._labels.items():
            if len(labels) == 0:
                raise self._error(f"the {split} split under {self.root} has no images")

    def _error(self, problem: str) -> DatasetError:
        return DatasetError([f"dataset {self.name!r}: {problem}"])

    def labels(self, split: Split) -> np.ndarray:
        return self._labels[split]

    def images(self, split: Split, indices: np.ndarray) -> torch.Tensor:
        ds = self._sets[split]
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) == 0:
            return torch.zeros((0, *self.image_shape), dtype=torch.uint8)
        return torch.stack([self._decode(ds, split, int(i)) for i in idx])

    def _decode(self, ds: Any, split: Split, i: int) -> torch.Tensor:
        """One image; a file PIL cannot decode (truncated, not an image) is named in the error."""
        try:
            return ds[i][0]
        except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three for broken files
            samples = getattr(ds, "samples", None) or getattr(ds, "_samples", None)
            where = samples[i][0] if samples else f"{split} image #{i}"
            raise self._error(f"{where}: cannot decode the image ({exc}); replace or delete the file") from None

    # ---- per dataset ---------------------------------------------------------------------
    def _present(self) -> bool:
        raise NotImplementedError

    def _open(self, split: Split, download: bool) -> Any:
        raise NotImplementedError

    def _split_labels(self, split: Split) -> Any:
        raise NotImplementedError

    def _hint(self) -> str:
        return ""


def _unverified(cls: type, lists: tuple[str, ...]) -> type:
    """A subclass of a torchvision dataset whose file md5s are None: torchvision's
    ``check_integrity(path, None)`` then only checks that the file exists."""
    attrs = {}
    for name in lists:
        value = getattr(cls, name)
        if isinstance(value, dict) and "filename" in value:  # CIFAR meta
            attrs[name] = {**value, "md5": None}
        elif isinstance(value, dict):  # SVHN split_list: split -> [url, filename, md5]
            attrs[name] = {k: [*v[:2], None] for k, v in value.items()}
        else:  # CIFAR train_list / test_list: [[filename, md5], ...]
            attrs[name] = [[f, None] for f, _ in value]
    return type(f"Unverified{cls.__name__}", (cls,), attrs)


@register
class CIFAR10(TorchvisionDataset):
    """``root/cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta)."""

    name = "cifar10"
    Params = ArchiveParams
    uap_eps = 4 / 255  # [S-L.1]
    standard_mean, standard_std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    expected = "cifar-10-batches-py/"

    @classmethod
    def known_num_classes(cls, spec: "DatasetSpec") -> int | None:
        return 10

    def __init__(self, spec: "DatasetSpec", params: ArchiveParams):
        super().__init__(spec, params)
        self.num_classes, self.image_shape = 10, (3, 32, 32)
        self.class_names = list(self._sets["train"].classes)

    def _present(self) -> bool:
        return (self.root / "cifar-10-batches-py").is_dir()

    def _open(self, split: Split, download: bool) -> Any:
        from torchvision.datasets import CIFAR10 as TV

        cls = TV if self.params.verify_md5 else _unverified(TV, ("train_list", "test_list", "meta"))
        return cls(str(self.root), train=split == "train", download=download)

    def _split_labels(self, split: Split) -> Any:
        return self._sets[split].targets

    def _hint(self) -> str:
        return "; if the files are a re-packed copy, set params.verify_md5: false" if self.params.verify_md5 else ""

    def images(self, split: Split, indices: np.ndarray) -> torch.Tensor:
        data = self._sets[split].data  # N×32×32×3 uint8, parsed by torchvision
        return torch.from_numpy(np.ascontiguousarray(data[np.asarray(indices, dtype=np.int64)].transpose(0, 3, 1, 2)))


@register
class SVHN(TorchvisionDataset):
    """``root/train_32x32.mat`` and ``root/test_32x32.mat`` (label 10 means digit 0)."""

    name = "svhn"
    Params = ArchiveParams
    uap_eps = 0.05  # [S-L.1]
    standard_mean, standard_std = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
    expected = "train_32x32.mat and test_32x32.mat"

    @classmethod
    def known_num_classes(cls, spec: "DatasetSpec") -> int | None:
        return 10

    def __init__(self, spec: "DatasetSpec", params: ArchiveParams):
        super().__init__(spec, params)
        self.num_classes, self.image_shape = 10, (3, 32, 32)
        self.class_names = [str(d) for d in range(10)]

    def _present(self) -> bool:
        return (self.root / "train_32x32.mat").is_file() and (self.root / "test_32x32.mat").is_file()

    def _open(self, split: Split, download: bool) -> Any:
        from torchvision.datasets import SVHN as TV

        cls = TV if self.params.verify_md5 else _unverified(TV, ("split_list",))
        return cls(str(self.root), split=split, download=download)

    def _split_labels(self, split: Split) -> Any:
        return self._sets[split].labels  # torchvision already maps 10 -> 0

    def _hint(self) -> str:
        return CIFAR10._hint(self)  # type: ignore[arg-type]

    def images(self, split: Split, indices: np.ndarray) -> torch.Tensor:
        data = self._sets[split].data  # N×3×32×32 uint8
        return torch.from_numpy(np.ascontiguousarray(data[np.asarray(indices, dtype=np.int64)]))


def _pil_pipeline(image_size: int, resize: int | None) -> Any:
    """PIL image -> uint8 C×H×W tensor of image_size² (resize shorter side + centre crop, or a
    plain resize when ``resize`` is None)."""
    from torchvision import transforms as T

    steps = [T.Resize(resize), T.CenterCrop(image_size)] if resize else [T.Resize((image_size, image_size))]
    return T.Compose([*steps, T.PILToTensor()])


@register
class GTSRB(TorchvisionDataset):
    """``root/gtsrb/GTSRB/Training/<00000..00042>/*.ppm`` plus ``root/gtsrb/GTSRB/Final_Test/Images``
    and ``root/gtsrb/GT-final_test.csv``: the public stand-in for the paper's LISA setup."""

    name = "gtsrb"
    Params = GTSRBParams
    uap_eps = 0.03  # [S-L.1] LISA's value: GTSRB stands in for LISA (traffic signs)
    NUM_CLASSES = 43
    standard_mean, standard_std = (0.3403, 0.3121, 0.3214), (0.2724, 0.2608, 0.2669)
    expected = "gtsrb/GTSRB/Training, gtsrb/GTSRB/Final_Test/Images and gtsrb/GT-final_test.csv"

    @classmethod
    def known_num_classes(cls, spec: "DatasetSpec") -> int | None:
        return cls.NUM_CLASSES

    def __init__(self, spec: "DatasetSpec", params: GTSRBParams):
        super().__init__(spec, params)
        self.num_classes = self.NUM_CLASSES
        self.image_shape = (3, params.image_size, params.image_size)
        self.class_names = [f"{k:05d}" for k in range(self.NUM_CLASSES)]
        folders = sorted(p.name for p in (self.root / "gtsrb/GTSRB/Training").iterdir() if p.is_dir())
        if folders != self.class_names:
            # torchvision numbers training classes by sorted folder position: a missing folder
            # would silently shift every later label.
            raise self._error(f"{self.root}/gtsrb/GTSRB/Training must hold the 43 class folders "
                              f"00000..00042, found {len(folders)}")

    def _present(self) -> bool:
        base = self.root / "gtsrb"
        return (base / "GTSRB/Training").is_dir() and (base / "GT-final_test.csv").is_file()

    def _open(self, split: Split, download: bool) -> Any:
        from torchvision.datasets import GTSRB as TV

        return TV(str(self.root), split=split, download=download,
                  transform=_pil_pipeline(self.params.image_size, None))

    def _split_labels(self, split: Split) -> Any:
        return [t for _, t in self._sets[split]._samples]  # torchvision keeps (path, class) pairs


@register
class ImageFolder(TorchvisionDataset):
    """``root/<train_dir>/<class>/*`` and ``root/<test_dir>/<class>/*`` (ImageNet layout).

    Both splits must list the same class folders, since labels are folder positions.
    """

    name = "imagefolder"
    Params = ImageFolderParams
    uap_eps = 10 / 255  # METHODS.md §2(e) ImageNet [REC]
    standard_mean, standard_std = IMAGENET_MEAN, IMAGENET_STD
    expected = "<train_dir>/<class>/ and <test_dir>/<class>/ image folders"

    @classmethod
    def check_spec(cls, spec: "DatasetSpec") -> list[str]:
        extra = ["download: an ImageFolder tree cannot be downloaded; set it to false"] if spec.download else []
        return super().check_spec(spec) + extra

    @classmethod
    def known_num_classes(cls, spec: "DatasetSpec") -> int | None:
        if spec.root is None:
            return None
        train = Path(spec.root).expanduser() / spec.params.get("train_dir", ImageFolderParams.train_dir)
        if not train.is_dir():
            return None
        return sum(1 for p in train.iterdir() if p.is_dir())

    def __init__(self, spec: "DatasetSpec", params: ImageFolderParams):
        super().__init__(spec, params)
        train, test = self._sets["train"].classes, self._sets["test"].classes
        if train != test:
            missing = sorted(set(train) ^ set(test))[:5]
            raise self._error(f"{self.root}/{params.train_dir} and {params.test_dir} must have the same class "
                              f"folders (labels are folder positions); they differ in {missing}")
        self.class_names = list(train)
        self.num_classes = len(train)
        self.image_shape = (3, params.image_size, params.image_size)

    def _present(self) -> bool:
        return (self.root / self.params.train_dir).is_dir() and (self.root / self.params.test_dir).is_dir()

    def _open(self, split: Split, download: bool) -> Any:
        from torchvision.datasets import ImageFolder as TV

        sub = self.params.train_dir if split == "train" else self.params.test_dir
        try:
            return TV(str(self.root / sub), transform=_pil_pipeline(self.params.image_size, self.params.resize))
        except FileNotFoundError as exc:  # no class folders / no images
            raise RuntimeError(str(exc)) from None

    def _split_labels(self, split: Split) -> Any:
        return self._sets[split].targets
