"""``trojai_examples``: the clean example images that ship inside a TrojAI-style model folder.

A TrojAI model folder (``root``) holds ``clean_example_data/`` (or ``example_data/``) with
images named ``class_<k>_example_<i>.<png|jpg>``; scanning a model with its own examples needs
no other dataset. TrojAI models take [0,1] RGB inputs without further normalisation, so the
statistics are mean 0 / std 1 (the wrapper is then the identity).

Split [REC]: per class, images sorted by example number; the last ``heldout_fraction`` of
them (at least one when a class has two or more) are "test" (held-out), the rest "train"
(attack images). Deterministic, disjoint, and independent of file-system order.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from farm.data.registry import register
from farm.data.base import Dataset, Split
from farm.errors import DatasetError

if TYPE_CHECKING:
    from farm.config import DatasetSpec

EXAMPLE_DIRS = ("clean_example_data", "example_data")
_NAME = re.compile(r"^class_(\d+)_example_(\d+)\.(png|jpe?g)$", re.IGNORECASE)


@dataclass(frozen=True)
class TrojAIParams:
    heldout_fraction: float = 0.25  # share of each class's examples held out for ASR
    image_size: int | None = None  # resize to this square; null: keep the images' own size

    def check(self) -> list[str]:
        out = []
        if not 0 < self.heldout_fraction < 1:
            out.append(f"heldout_fraction: must be in (0, 1), got {self.heldout_fraction}")
        if self.image_size is not None and self.image_size < 8:
            out.append(f"image_size: must be >= 8 or null, got {self.image_size}")
        return out


def example_files(root: Path) -> list[tuple[int, int, Path]]:
    """(class, example number, path) of every example image, sorted; [] if there is no folder."""
    for name in EXAMPLE_DIRS:
        folder = root / name
        if folder.is_dir():
            found = [(int(m[1]), int(m[2]), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
            return sorted(found)
    return []


@register
class TrojAIExamples(Dataset):
    name = "trojai_examples"
    uap_eps = 10 / 255  # ImageNet-sized natural images: the ImageNet value [REC]
    Params = TrojAIParams
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)

    @classmethod
    def check_spec(cls, spec: "DatasetSpec") -> list[str]:
        out = [] if spec.root else ["root: set it to the TrojAI model folder (the one holding clean_example_data/)"]
        return out + (["download: TrojAI folders cannot be downloaded; set it to false"] if spec.download else [])

    @classmethod
    def known_num_classes(cls, spec: "DatasetSpec") -> int | None:
        files = example_files(Path(spec.root).expanduser()) if spec.root else []
        return max(k for k, _, _ in files) + 1 if files else None

    def __init__(self, spec: "DatasetSpec", params: TrojAIParams):
        root = Path(spec.root or "").expanduser()
        files = example_files(root)
        if not files:
            raise DatasetError([f"dataset 'trojai_examples': {root} has no {' or '.join(EXAMPLE_DIRS)}/ folder with "
                                "class_<k>_example_<i>.png images; set datasets.<key>.root to the model folder"])
        self.params = params
        self.num_classes = max(k for k, _, _ in files) + 1
        self.class_names = [f"class_{k}" for k in range(self.num_classes)]
        self._files: dict[Split, list[tuple[int, Path]]] = {"train": [], "test": []}
        for k in range(self.num_classes):
            mine = [(k, p) for c, _, p in files if c == k]
            n_test = 0 if len(mine) < 2 else min(len(mine) - 1, max(1, math.floor(params.heldout_fraction * len(mine))))
            self._files["train"] += mine[:len(mine) - n_test]
            self._files["test"] += mine[len(mine) - n_test:]
        self._labels = {s: np.array([k for k, _ in f], dtype=np.int64) for s, f in self._files.items()}
        first = self._decode(files[0][2])
        self.image_shape = tuple(first.shape)  # type: ignore[assignment]

    def _decode(self, path: Path) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor, resize

        try:
            with Image.open(path) as img:
                x = pil_to_tensor(img.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or not an image
            raise DatasetError([f"dataset 'trojai_examples': {path}: cannot decode the image ({exc}); "
                                "replace or delete the file"]) from None
        if self.params.image_size is not None:
            x = resize(x, [self.params.image_size] * 2, antialias=True)
        return x

    def labels(self, split: Split) -> np.ndarray:
        return self._labels[split]

    def images(self, split: Split, indices: np.ndarray) -> torch.Tensor:
        out = [self._decode(self._files[split][int(i)][1]) for i in np.asarray(indices, dtype=np.int64)]
        for x, i in zip(out, indices):
            if tuple(x.shape) != self.image_shape:
                raise DatasetError([f"dataset 'trojai_examples': {self._files[split][int(i)][1]} is "
                                    f"{'×'.join(map(str, x.shape))}, others are {'×'.join(map(str, self.image_shape))}; "
                                    "set params.image_size to resize them all"])
        return torch.stack(out) if out else torch.zeros((0, *self.image_shape), dtype=torch.uint8)
