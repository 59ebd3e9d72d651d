"""Dataset registry and the one cached loader every component goes through.

Datasets register by name (``@register``); a config's ``datasets.<key>.params`` are checked
against the class's frozen ``Params`` dataclass before anything runs, and
:func:`load_dataset` builds each distinct spec once per process, because the driver, the zoo
and the report all ask for the same data and synthetic generation / decoding is not free. A registered class is constructed as
``cls(spec, cls.Params(**spec.params))``.
"""
from __future__ import annotations

from farm.data.base import Dataset, NoParams, Split
from farm.errors import DatasetError
from farm.data.registry import DATASETS, load_dataset, register, spec_key

from farm.data import synthetic as _synthetic  # noqa: E402,F401  (registers "synthetic")
from farm.data import torchvision_sets as _tv  # noqa: E402,F401  (cifar10, svhn, gtsrb, imagefolder)
from farm.data import trojai as _trojai  # noqa: E402,F401  (registers "trojai_examples")
from farm.data import idx as _idx  # noqa: E402,F401  (mnist, fashion_mnist, kmnist)

__all__ = ["DATASETS", "Dataset", "DatasetError", "NoParams", "Split", "register", "load_dataset", "spec_key"]
