"""Adversarial fine-tuning of one model with one trigger source, checkpointed per epoch.

The loop is the zoo's training recipe (same augmentation, SGD with nesterov momentum) started
from the natural model's weights; a ``stamp_share`` of every batch is stamped by the trigger
source and keeps its TRUE labels, which teaches the model to ignore the small patterns an
inversion finds between its classes (METHODS.md §2(g) [S-L.1]).

Everything random in an epoch is drawn from a generator seeded by (seed, tag, epoch), and the
trigger source starts each epoch afresh, so the checkpoint written after every epoch (weights,
optimiser, seconds so far) is a complete state: a run killed at any point resumes from its last
finished epoch and ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from farm import failpoints
from farm.data import Dataset
from farm.harden.config import HardenTrainSpec
from farm.harden.sources import TriggerSource, draw_targets
from farm.methods import pair_seed
from farm.models.loading import save_atomic
from farm.models.zoo import augment_batch, evaluate


@dataclass
class HardenOutcome:
    accuracy: float  # clean test accuracy after hardening
    seconds: float  # training wall time summed over epochs (a resume adds its own epochs only)
    resumed_from: int  # epochs found in the checkpoint when this call started (0: fresh)
    stamped: int  # images stamped with a trigger over all epochs


def harden(model: torch.nn.Module, ds: Dataset, source: TriggerSource, spec: HardenTrainSpec, seed: int,
           tag: str, checkpoint: Path, log: Callable[[str], object] = print,
           device: str | torch.device = "cpu") -> HardenOutcome:
    """Fine-tune ``model`` in place for ``spec.epochs`` epochs, resuming from ``checkpoint``."""
    labels = torch.as_tensor(ds.labels("train"), dtype=torch.long)
    images = ds.images("train", np.arange(len(labels)))
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=0.9, nesterov=True,
                          weight_decay=spec.weight_decay)
    start, seconds, stamped = 0, 0.0, 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, seconds, stamped = int(state["epoch"]), float(state["seconds"]), int(state["stamped"])
        log(f"harden {tag}: resuming after epoch {start} of {spec.epochs}")
    n = len(labels)
    n_batches = max(1, n // spec.batch_size)
    for epoch in range(start, spec.epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(pair_seed(seed, tag, "epoch", epoch))
        source.begin_epoch(epoch)
        model.train()
        loss_sum = 0.0
        for idx in torch.tensor_split(torch.randperm(n, generator=gen), n_batches):
            x = augment_batch(images[idx], gen).float() / 255
            y = labels[idx]
            sel = torch.randperm(len(idx), generator=gen)[: round(spec.stamp_share * len(idx))]
            targets = draw_targets(y[sel], ds.num_classes, gen)
            x = x.to(device)
            x[sel] = source.stamp(model, x[sel], y[sel], targets)
            stamped += len(sel)
            loss = F.cross_entropy(model(x), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
        seconds += time.perf_counter() - t0
        save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                     "seconds": seconds, "stamped": stamped}, checkpoint)
        failpoints.hit("harden.checkpoint")
        log(f"harden {tag}: epoch {epoch + 1}/{spec.epochs} loss {loss_sum / n:.4f} "
            f"({time.perf_counter() - t0:.1f}s)")
    model.eval()
    accuracy = evaluate(model, ds, None)["clean_acc"]
    assert accuracy is not None  # always measured; only the poisoned-model fields can be None
    return HardenOutcome(accuracy, seconds, start, stamped)
