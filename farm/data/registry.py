"""The dataset registry and the cached loader, apart from ``farm.data`` so that the dataset
modules can register themselves without importing the package that imports them.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from farm.data.base import Dataset
from farm.schema import to_dict

if TYPE_CHECKING:
    from farm.config import DatasetSpec

DATASETS: dict[str, type[Dataset]] = {}
_CACHE: dict[str, Dataset] = {}


def register(cls: type[Dataset]) -> type[Dataset]:
    """Class decorator: make ``cls`` available as ``datasets.<key>.name: <cls.name>``."""
    if cls.name in DATASETS:
        raise ValueError(f"dataset {cls.name!r} registered twice")
    DATASETS[cls.name] = cls
    return cls


def spec_key(spec: "DatasetSpec") -> str:
    """Canonical JSON of a spec: the spec is frozen but its ``params`` dict is not hashable."""
    return json.dumps(to_dict(spec), sort_keys=True, separators=(",", ":"))


def load_dataset(spec: "DatasetSpec") -> Dataset:
    """The dataset a spec describes, built once per process (same spec, same object)."""
    key = spec_key(spec)
    if key not in _CACHE:
        if spec.name not in DATASETS:
            raise ValueError(f"unknown dataset {spec.name!r}; expected one of {', '.join(sorted(DATASETS))}")
        cls = DATASETS[spec.name]
        _CACHE[key] = cls(spec, cls.Params(**spec.params))
    return _CACHE[key]
