"""Trigger-inversion methods, registered by name (see ``farm.methods.base.register``).

Importing this package imports every module in it, so the registry is complete and a new
method is one new file here (its ``@register(name, MethodInfo(...))`` does the rest).
"""
import importlib
import pkgutil

from farm.methods.base import (METHODS, STOP_REASONS, Method, MethodInfo, PairBatch, PairOutcome, create_method,
                               method_class, method_info, method_params, pair_seed)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "STOP_REASONS", "Method", "MethodInfo", "PairBatch", "PairOutcome", "create_method", "method_class",
           "method_info", "method_params", "pair_seed"]
