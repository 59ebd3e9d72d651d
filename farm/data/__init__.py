"""Dataset registry and the one cached loader every component goes through.

Datasets register by name (``@register``); a config's ``datasets.<key>.params`` are checked
against the class's frozen ``Params`` dataclass before anything runs, and
:func:`load_dataset` builds each distinct spec once per process, because the driver, the zoo
and the report all ask for the same data and synthetic generation / decoding is not free. A registered class is constructed as
``cls(spec, cls.Params(**spec.params))``.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from farm.data.base import Dataset, DatasetError, NoParams, Split
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


from farm.data import synthetic as _synthetic  # noqa: E402,F401  (registers "synthetic")
from farm.data import torchvision_sets as _tv  # noqa: E402,F401  (cifar10, svhn, gtsrb, imagefolder)
from farm.data import trojai as _trojai  # noqa: E402,F401  (registers "trojai_examples")
from farm.data import idx as _idx  # noqa: E402,F401  (mnist, fashion_mnist, kmnist)

__all__ = ["DATASETS", "Dataset", "DatasetError", "NoParams", "Split", "register", "load_dataset", "spec_key"]
