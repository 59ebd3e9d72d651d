"""A TrojAI-style round as the models of a scan, instead of a trained zoo.

A round is a folder of model folders (``id-00000000/``, ``id-00000001/``, ...), each as
:mod:`farm.models.trojai` reads one: ``model.pt``, its clean example images, optional
``ground_truth.csv`` and ``config.json``. Every model is scanned with its own examples (the
images K-Arm pre-screens and inverts on); the ground truth, where a folder states it, goes in
the rows like a zoo model's, and a model without one is scanned and decided but left out of the
Table 8 metrics (there is nothing to score it against).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from farm.config import DatasetSpec
from farm.data import Dataset, load_dataset
from farm.errors import CheckpointError, FarmError
from farm.grid import ANY
from farm.models.loading import load_checkpoint
from farm.models.trojai import folder_config, ground_truth, model_file

FOLDER_GLOB = "id-*"


@dataclass(frozen=True)
class RoundModel:
    """One model folder of the round; ``id`` is the folder name (the rows' ``model_id``)."""

    id: str
    folder: str


def round_models(round_dir: str, trust_code: bool) -> list[RoundModel]:
    """The round's model folders, each checked before any scan starts: a missing folder, a
    folder without a usable ``model.pt``, or TorchScript without ``trust_code`` fail here."""
    root = Path(round_dir).expanduser()
    if not root.is_dir():
        raise FarmError(f"round_dir: {root} is not a folder (a TrojAI round: id-*/model.pt + clean_example_data/)")
    folders = sorted(p for p in root.glob(FOLDER_GLOB) if p.is_dir())
    if not folders:
        raise FarmError(f"round_dir: {root} has no {FOLDER_GLOB} model folders")
    problems = []
    for folder in folders:
        try:
            _, fmt = model_file(folder, CheckpointError)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if fmt == "torchscript" and not trust_code:
            problems.append(f"{folder / 'model.pt'}: TorchScript is code that runs when loaded; pass "
                            "--trust-code only if you trust whoever made the files (docs/security.md)")
    if problems:
        raise FarmError("round_dir: " + "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)"
                                                                   if len(problems) > 5 else ""))
    return [RoundModel(p.name, str(p)) for p in folders]


def load_round_model(m: RoundModel, arch: str | None, trust_code: bool) -> tuple[torch.nn.Module, Dataset,
                                                                                   dict[str, Any]]:
    """(model, its example images, the row's ground-truth columns) of one round folder."""
    folder = Path(m.folder)
    ds = load_dataset(DatasetSpec(name="trojai_examples", root=str(folder)))
    arch = arch or str(folder_config(folder).get("arch") or "small_cnn")
    model = load_checkpoint(folder, "trojai", arch, ds.num_classes, ds.image_shape, ds.mean, ds.std,
                            trust_code=trust_code)
    gt = ground_truth(folder)
    known = "model_kind" in gt
    victim = gt.get("gt_victim")
    truth = {"model_id": m.id, "arch": arch, "attack": gt.get("attack"),
             "poisoned": gt["model_kind"] == "poisoned" if known else None,
             "true_target": gt.get("gt_target"), "true_victim": None if victim in (None, ANY) else victim,
             "clean_acc": None, "asr": None}
    return model, ds, truth
