"""Model registry: architectures by name, always wrapped to take [0,1] inputs.

``ARCHS`` maps a name to ``builder(num_classes, image_shape) -> nn.Module`` (a bare network on
normalised inputs); :func:`build_model` adds the dataset's normalisation. Names of the form
``torchvision:<name>`` build an untrained torchvision model, never downloading weights, so
any of its classifiers can be trained by the zoo or loaded from a state dict.
"""
from __future__ import annotations

from farm.models.registry import ARCHS, build_model, build_net, register_arch
from farm.models.wrapper import NormalizedModel

from farm.models import archs as _archs  # noqa: E402,F401  (registers the built-in archs)

__all__ = ["ARCHS", "register_arch", "build_model", "build_net", "NormalizedModel"]
