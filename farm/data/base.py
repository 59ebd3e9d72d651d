"""Dataset interface: labelled uint8 images by split, addressed by index.

Methods never touch datasets: the driver selects each pair's attack and held-out images
(``farm.data.selection``) and ships them as uint8 tensors, so workers on other nodes need no
access to the data. Images stay uint8 until a method divides by 255, which keeps every
backend (synthetic, CIFAR-10 batches, ImageFolder JPEGs) bit-identical in [0,1] space.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch

from farm.errors import DatasetError as DatasetError  # re-exported: the old home, for code that imports it here

if TYPE_CHECKING:
    from farm.config import DatasetSpec

Split = Literal["train", "test"]


@dataclass(frozen=True)
class NoParams:
    """For datasets without options."""


class Dataset(ABC):
    """A labelled image dataset. Subclasses register with :func:`farm.data.register`."""

    name: ClassVar[str]
    Params: ClassVar[type] = NoParams
    version: ClassVar[int] = 1  # bump when the same spec yields different images (zoo cache key)
    num_classes: int
    class_names: list[str]
    image_shape: tuple[int, int, int]  # C, H, W
    mean: tuple[float, ...]  # per-channel normalisation applied inside the model wrapper
    std: tuple[float, ...]
    # L-inf budget of the targeted UAP baseline (METHODS.md §2(e)) on this dataset: the paper's
    # value where the paper has one, otherwise the documented rule (docs/methods.md, "uap").
    uap_eps: ClassVar[float]

    @classmethod
    def known_num_classes(cls, spec: "DatasetSpec") -> int | None:
        """K without loading data (for config validation); None if it needs the files."""
        return None

    @classmethod
    def check_spec(cls, spec: "DatasetSpec") -> list[str]:
        """Config problems beyond ``Params`` ("field: problem"), found without reading files."""
        return []

    @abstractmethod
    def labels(self, split: Split) -> np.ndarray:
        """All labels of a split as int64 (cheap: no image decoding)."""

    @abstractmethod
    def images(self, split: Split, indices: np.ndarray) -> torch.Tensor:
        """uint8 images N×C×H×W for the given indices of a split."""
