"""TrojAI-style model folders: ``model.pt`` + example images + optional ground truth.

Layout (``checkpoint:`` names the folder, ``format: trojai``)::

    <dir>/model.pt                 TorchScript, or a state dict (arch: the model's ``arch``)
    <dir>/clean_example_data/      class_<k>_example_<i>.png (or example_data/): see farm.data.trojai
    <dir>/ground_truth.csv         optional: one value, 1 = poisoned, 0 = clean
    <dir>/config.json              optional: "arch" (checked against the config), and for a
                                   poisoned model "trigger_target_class" / "triggered_classes"

TrojAI's own rounds ship ``model.pt`` as a pickled full model (``torch.save(model)``), which
can only be read by running code from the file. That is refused with the one-line conversion
to TorchScript, to run once in an environment that trusts the file.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from farm.grid import ANY
from farm.models.pickles import pickled_globals

MODEL_FILE = "model.pt"
_TENSOR_GLOBALS = ("torch.", "collections.OrderedDict")


def model_file(folder: Path, error: type[Exception]) -> tuple[Path, str]:
    """(path of model.pt, 'torchscript' | 'state_dict'); ``error`` for anything unusable."""
    if not folder.is_dir():
        raise error(f"{folder}: format 'trojai' expects a model folder (model.pt, clean_example_data/); "
                    "point the model's 'checkpoint' at the folder")
    path = folder / MODEL_FILE
    if not path.is_file():
        raise error(f"{folder}: no {MODEL_FILE} in this TrojAI folder")
    if _is_torchscript(path):
        return path, "torchscript"
    foreign = [g for g in (pickled_globals(path) or []) if not g.startswith(_TENSOR_GLOBALS)]
    if foreign:
        raise error(
            f"{path}: a pickled full model ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
            "loading it would run code from the file, so it is refused. Convert it once where you trust it: "
            "python -c \"import torch; m = torch.load('model.pt', weights_only=False).eval(); "
            "torch.jit.script(m).save('model.pt')\" (or save m.state_dict() and name the arch in config.json)")
    return path, "state_dict"


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips with a ``code/`` folder; state dicts and pickles have none."""
    raw = path.read_bytes()
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        return False
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        return any("/code/" in n for n in zf.namelist())


def folder_config(folder: Path) -> dict[str, Any]:
    """``config.json`` with lower-cased keys ({} if absent or unreadable as JSON)."""
    path = folder / "config.json"
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return {str(k).lower(): v for k, v in data.items()} if isinstance(data, dict) else {}


def ground_truth(folder: Path) -> dict[str, Any]:
    """Row ground-truth columns from the folder ({} if it states none: the config's attack stays)."""
    gt = folder / "ground_truth.csv"
    if not gt.is_file():
        return {}
    text = gt.read_text().strip().split(",")[0].strip()
    if text not in ("0", "1"):
        return {}
    if text == "0":
        return {"model_kind": "clean", "attack": "none", "gt_victim": None, "gt_target": None}
    cfg = folder_config(folder)
    target = cfg.get("trigger_target_class")
    victims = cfg.get("triggered_classes")
    victim = victims[0] if isinstance(victims, list) and len(victims) == 1 else ANY
    return {"model_kind": "poisoned", "attack": "unknown", "gt_victim": victim,
            "gt_target": target if isinstance(target, int) else None}
