"""Trigger-inversion methods, registered by name (see ``farm.methods.base.register``).

Importing this package imports every method module so that the registry is complete.
"""
from farm.methods import abs, cw, nc, nc_prune, pixel, uap  # noqa: F401  (registration side effects)
from farm.methods.base import (METHODS, STOP_REASONS, Method, MethodInfo, PairBatch, PairOutcome, create_method,
                               method_class, method_info, method_params, pair_seed)

__all__ = ["METHODS", "STOP_REASONS", "Method", "MethodInfo", "PairBatch", "PairOutcome", "create_method", "method_class",
           "method_info", "method_params", "pair_seed"]
