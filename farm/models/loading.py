"""Safe checkpoint loading with errors that say what is wrong and how to fix it.

Two file formats are read (``trojai``, a model folder, holds one of them:
:mod:`farm.models.trojai`). A state dict is data; TorchScript is a program, so it is loaded
only when the user trusts the file (docs/security.md):

* ``state_dict``: ``torch.load(weights_only=True)``. Accepted layouts: the bare network's
  state dict, a :class:`NormalizedModel` state dict (``net.*`` keys plus ``mean``/``std``
  buffers, as the zoo writes), either wrapped as ``{"state_dict": ...}``, with or without a
  DataParallel ``module.`` prefix. Normalisation buffers found in the file win over the
  dataset's statistics: they are what the weights were trained with.
* ``torchscript``: refused unless ``trust_code`` (the model's ``trust_code: true`` or
  ``--trust-code``): its ``forward`` can write files, loop forever or exhaust memory. When
  trusted, the first forward runs in a child process with a time and memory limit
  (:mod:`farm.models.probe`) before ``torch.jit.load`` here. Rule for inputs: the module already takes [0,1] images
  if it is a scripted :class:`NormalizedModel` (top-level ``net`` plus ``mean``/``std``
  buffers, as :func:`save_torchscript` writes) or if the archive carries the extra file
  ``farm.json`` with ``{"inputs": "unit"}`` (for models that normalise in their own way).
  Otherwise it is assumed to take normalised inputs and is wrapped with the dataset's
  mean/std, and the wrapper is scripted too, so the result is always a ScriptModule that
  ``torch.jit.save`` can ship elsewhere and that this rule reads back unchanged.
"""
from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from farm.errors import CheckpointError
from farm.models import build_net
from farm.models.pickles import pickled_globals
from farm.models.wrapper import NormalizedModel

_META = "farm.json"
TRUST_HINT = ("set trust_code: true on the model (or pass --trust-code) only if you trust whoever made the file; "
              "otherwise ask for a state dict (torch.save(model.state_dict(), path))")


@contextmanager
def _jit_quiet() -> Iterator[None]:
    """TorchScript is deprecated upstream (FutureWarning on every call) but is a format we read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temp file + rename: a reader (or a resume after SIGKILL) never
    sees half a file, only the previous one or the new one."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_state_dict(model: nn.Module, path: str | Path) -> None:
    """Write ``model.state_dict()`` atomically: readers never see half a file."""
    save_atomic({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)


def save_torchscript(model: nn.Module, path: str | Path, image_shape: tuple[int, int, int]) -> None:
    """Trace a [0,1]-input model to TorchScript, marked so :func:`load_checkpoint` won't re-normalise."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    was_training = model.training
    with _jit_quiet():
        traced = torch.jit.trace(model.eval().cpu(), torch.rand(1, *image_shape))
        torch.jit.save(traced, str(tmp), _extra_files={_META: json.dumps({"inputs": "unit"})})
    model.train(was_training)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, fmt: str, arch: str, num_classes: int,
                    image_shape: tuple[int, int, int], mean: Sequence[float], std: Sequence[float],
                    device: str | torch.device = "cpu", trust_code: bool = False,
                    probe: bool = True) -> nn.Module:
    """A model in eval mode taking [0,1] images N×C×H×W and returning K logits.

    ``trust_code`` allows TorchScript (which is code); ``probe`` runs its first forward in a
    limited child process first. Only payloads the driver already probed skip it (actors).
    """
    path = Path(path)
    if fmt == "trojai":
        path, fmt = _trojai_model(path, arch)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; check the model's 'checkpoint' path")
    if fmt == "state_dict":
        model = _load_state_dict(path, arch, num_classes, image_shape, mean, std)
    elif fmt == "torchscript":
        if not trust_code:
            raise CheckpointError(f"{path}: refused: a TorchScript file is a program (its forward can write files, "
                                  f"loop forever or exhaust memory), and this model is not trusted; {TRUST_HINT}")
        if probe:
            _probe(path, image_shape)
        model = _load_torchscript(path, mean, std)
    else:
        raise CheckpointError(f"{path}: format {fmt!r} is not supported; use 'state_dict', 'torchscript' or 'trojai'")
    model = model.to(device).eval()
    _check_io(model, path, num_classes, image_shape, device)
    return model


# ---- state dicts -------------------------------------------------------------------------
def _load_state_dict(path: Path, arch: str, k: int, shape: tuple[int, int, int],
                     mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pickle-protocol chatter; errors still raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = pickled_globals(path)
        if names is not None or "allowed global" in str(exc):
            raise CheckpointError(
                f"{path}: refused: the file contains pickled code objects "
                f"({', '.join(names or []) or 'disallowed globals'}); "
                "only state dicts / TorchScript are loaded. Re-export with "
                "torch.save(model.state_dict(), path) or torch.jit.save") from None
        raise _corrupt(path, exc) from None
    except Exception as exc:  # noqa: BLE001 - garbage bytes can fail anywhere in the unpickler
        raise _corrupt(path, exc) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict (expected a mapping of names to tensors, got "
                              f"{type(obj).__name__}); save with torch.save(model.state_dict(), path)")
    sd = {k_.removeprefix("module."): v for k_, v in obj.items()}
    if any(key.startswith("net.") for key in sd):
        mean, std = sd.pop("mean", mean), sd.pop("std", std)
        sd = {key.removeprefix("net."): v for key, v in sd.items()}
    mean = [float(v) for v in torch.as_tensor(mean).flatten()]
    std = [float(v) for v in torch.as_tensor(std).flatten()]
    try:
        net = build_net(arch, k, shape)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    _check_shapes(path, arch, net, sd, k, shape)
    try:
        net.load_state_dict(sd)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: does not match arch {arch!r}: {_first_line(exc)}; "
                              "set the model's 'arch' to the architecture it was trained with") from None
    return NormalizedModel(net, mean, std)


def _check_shapes(path: Path, arch: str, net: nn.Module, sd: dict[str, torch.Tensor], k: int,
                  shape: tuple[int, int, int]) -> None:
    """Name the usual causes of a shape mismatch before load_state_dict's generic error."""
    want = net.state_dict()
    weights = [key for key, v in want.items() if v.dim() >= 2]
    first, last = weights[0], weights[-1]
    if last in sd and sd[last].shape[0] != want[last].shape[0]:
        raise CheckpointError(f"{path}: the checkpoint has {sd[last].shape[0]} output classes "
                              f"({last} is {tuple(sd[last].shape)}) but the dataset has {k}; "
                              "scan it with the dataset it was trained on")
    if first in sd and sd[first].dim() >= 2 and sd[first].shape[1] != want[first].shape[1]:
        raise CheckpointError(f"{path}: the checkpoint expects {sd[first].shape[1]}-channel inputs "
                              f"({first} is {tuple(sd[first].shape)}) but the dataset's images are "
                              f"{'×'.join(map(str, shape))}; use a matching dataset")
    for key, v in sd.items():
        if key in want and v.shape != want[key].shape:
            raise CheckpointError(f"{path}: does not match arch {arch!r}: {key} is {tuple(v.shape)}, "
                                  f"expected {tuple(want[key].shape)}; set 'arch' to the trained architecture")


def _corrupt(path: Path, exc: BaseException) -> CheckpointError:
    return CheckpointError(f"{path}: unreadable checkpoint, the file is truncated or corrupt "
                           f"({type(exc).__name__}: {_first_line(exc) or 'no detail'}); "
                           "copy or export it again")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


# ---- TorchScript -------------------------------------------------------------------------
def _probe(path: Path, image_shape: tuple[int, int, int]) -> None:
    from farm.models import probe

    try:
        probe.first_forward_shape(path, image_shape, probe.PROBE_TIMEOUT_S, probe.PROBE_MEMORY_BYTES)
    except probe.ProbeFailed as exc:
        if exc.stage == "load":
            raise _unreadable_torchscript(path, str(exc)) from None
        if exc.stage == "forward":
            raise _wrong_inputs(path, image_shape, str(exc)) from None
        raise CheckpointError(f"{path}: the trusted TorchScript model failed its first forward in a limited child "
                              f"process: {exc}; check the file, or use a state dict") from None


def _unreadable_torchscript(path: Path, detail: str) -> CheckpointError:
    return CheckpointError(f"{path}: not a readable TorchScript archive ({detail}); "
                           "export with torch.jit.save, or use format 'state_dict'")


def _wrong_inputs(path: Path, shape: tuple[int, int, int], detail: str) -> CheckpointError:
    return CheckpointError(f"{path}: the model does not accept the dataset's {'×'.join(map(str, shape))} images "
                           f"({detail}); use the dataset it was trained on")


def _load_torchscript(path: Path, mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    extra = {_META: ""}
    try:
        with _jit_quiet():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as exc:
        raise _unreadable_torchscript(path, _first_line(exc)) from None
    meta = json.loads(extra[_META]) if extra[_META] else {}
    if meta.get("inputs") == "unit" or all(hasattr(module, a) for a in ("net", "mean", "std")):
        return module
    with _jit_quiet():
        return torch.jit.script(NormalizedModel(module, mean, std))


# ---- TrojAI folders -----------------------------------------------------------------------
def _trojai_model(folder: Path, arch: str) -> tuple[Path, str]:
    """The model file inside a TrojAI folder and its format (farm.models.trojai)."""
    from farm.models import trojai

    path, fmt = trojai.model_file(folder, CheckpointError)
    named = trojai.folder_config(folder).get("arch")
    if fmt == "state_dict" and named and named != arch:
        raise CheckpointError(f"{folder}: config.json names arch {named!r} but the model's arch is {arch!r}; "
                              f"set arch: {named}")
    return path, fmt


def frozen(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with every parameter's ``requires_grad`` off, for inversion.

    Not ``model.requires_grad_(False)``: TorchScript modules do not support it."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


# ---- sanity ------------------------------------------------------------------------------
def _check_io(model: nn.Module, path: Path, k: int, shape: tuple[int, int, int],
              device: str | torch.device) -> None:
    """One dummy forward at the dataset's shape: catches input-size and class-count mismatches."""
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *shape, device=device))
    except Exception as exc:  # noqa: BLE001 - any failure here is an input mismatch
        raise _wrong_inputs(path, shape, f"{type(exc).__name__}: {_first_line(exc)}") from None
    if out.dim() != 2 or out.shape[1] != k:
        raise CheckpointError(f"{path}: the model outputs shape {tuple(out.shape)} for 2 images but the "
                              f"dataset has {k} classes; scan it with the dataset it was trained on")
