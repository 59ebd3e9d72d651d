"""The model zoo: trains clean and poisoned models with a recorded ground truth, cached.

A zoo entry is identified by what determines its weights (architecture, attack, training
recipe, dataset), not by the config's model id, so two configs naming the same model
differently share one entry, and changing any of those inputs trains a new one. Entries are
written into a temp directory and renamed into place: a crash or a concurrent builder never
leaves a half-written entry that later runs would trust.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from farm.config import DatasetSpec, ModelSpec, TrainSpec, attack_identity
from farm.data import DATASETS, Dataset, load_dataset
from farm.host_copy import to_device
from farm.models import build_model
from farm.threads import torch_threads
from farm.metrics import predict
from farm.models.loading import load_checkpoint, save_state_dict
from farm.models.poison import Poison, make_poison, poison_plan
from farm.schema import to_dict

ZOO_VERSION = 1  # bump when training/poisoning code changes what a key's weights are
_PAD = 2  # random-crop padding of the training augmentation
_EVAL_BATCH = 1000


@dataclass(frozen=True)
class ZooEntry:
    key: str
    path: Path  # model.pt: a NormalizedModel state dict (net.* + mean/std)
    meta: dict[str, Any]

    def load(self, device: str | torch.device = "cpu") -> nn.Module:
        """The trained model in eval mode, taking [0,1] images."""
        m = self.meta
        return load_checkpoint(self.path, "state_dict", m["arch"], m["num_classes"],
                               tuple(m["image_shape"]), m["mean"], m["std"], device)


def zoo_key(spec: ModelSpec, dataset_spec: DatasetSpec) -> str:
    """16 hex chars of sha256 over everything that determines the trained weights."""
    data_version = DATASETS[dataset_spec.name].version if dataset_spec.name in DATASETS else 0
    ident = {"version": ZOO_VERSION, "arch": spec.arch, "attack": attack_identity(spec.attack),
             "train": to_dict(spec.train), "dataset": to_dict(dataset_spec), "data_version": data_version}
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ensure_model(spec: ModelSpec, dataset_spec: DatasetSpec, zoo_dir: Path,
                 log: Callable[[str], Any] = print, device: str | torch.device = "cpu",
                 threads: int | None = None) -> ZooEntry:
    """The zoo entry of ``spec``: read from ``zoo_dir`` if built before, else trained now.

    ``threads``: intra-op threads for training and evaluating on a CPU (None: the process's).
    CPU sums depend on the thread count, so every command that may train a model passes the
    count its Ray tasks use (farm.threads): which path trains a model must not change it."""
    key = zoo_key(spec, dataset_spec)
    final = Path(zoo_dir) / key
    if (final / "meta.json").is_file():
        log(f"zoo: cache hit {key} ({spec.arch}, attack {spec.attack.type})")
        return ZooEntry(key, final / "model.pt", json.loads((final / "meta.json").read_text()))
    log(f"zoo: training {key} ({spec.arch}, attack {spec.attack.type}) on {device}")
    ds = load_dataset(dataset_spec)
    poison = make_poison(spec.attack, ds.image_shape, spec.train.seed)
    cpu_threads = threads if torch.device(device).type == "cpu" else None
    with torch_threads(cpu_threads) if cpu_threads is not None else contextlib.nullcontext():
        t0 = time.perf_counter()
        model = train_model(ds, spec, poison, log, device)
        seconds = time.perf_counter() - t0
        quality = evaluate(model, ds, poison)
    meta = {
        "key": key, "version": ZOO_VERSION, "arch": spec.arch, "dataset": dataset_spec.name,
        "dataset_spec": to_dict(dataset_spec), "num_classes": ds.num_classes,
        "image_shape": list(ds.image_shape), "mean": list(ds.mean), "std": list(ds.std),
        "kind": "clean" if poison is None else "poisoned",
        **quality,
        "attack": poison.meta() if poison else {"type": "none"},
        "train": to_dict(spec.train), "train_seconds": round(seconds, 3), "train_device": str(device),
    }
    log(f"zoo: {key} clean acc {100 * meta['clean_acc']:.1f}%"
        + (f", ASR {100 * meta['asr']:.1f}%" if poison else "") + f" ({seconds:.1f}s)")
    _write_entry(final, model, meta)
    return ZooEntry(key, final / "model.pt", json.loads((final / "meta.json").read_text()))


def _write_entry(final: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_state_dict(model, tmp / "model.pt")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        os.replace(tmp, final)
    except OSError:
        # Another process finished the same key first; its entry is equivalent.
        if not (final / "meta.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def write_manifest(zoo_dir: Path) -> Path:
    """``zoo_dir/manifest.json``: one summary per entry (trigger patterns left out)."""
    zoo_dir = Path(zoo_dir)
    entries = []
    for meta_path in sorted(zoo_dir.glob("*/meta.json")):
        if meta_path.parent.name.startswith("."):
            continue
        meta = json.loads(meta_path.read_text())
        meta["attack"] = {k: v for k, v in meta["attack"].items() if k != "pattern"}
        entries.append(meta)
    out = zoo_dir / "manifest.json"
    tmp = zoo_dir / f".tmp-manifest-{os.getpid()}.json"
    tmp.write_text(json.dumps({"version": ZOO_VERSION, "entries": entries}, indent=1))
    os.replace(tmp, out)
    return out


# ---- training ----------------------------------------------------------------------------
def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding ``_PAD``) and horizontal flip of uint8 images, per sample.

    The random draws come from ``gen`` on the host and only they travel to ``x.device``: the
    same seed gives the same augmentation wherever the images live."""
    n, _, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (_PAD,) * 4)
    oy = to_device(torch.randint(0, 2 * _PAD + 1, (n,), generator=gen), dev)
    ox = to_device(torch.randint(0, 2 * _PAD + 1, (n,), generator=gen), dev)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    out = padded[torch.arange(n, device=dev)[:, None, None, None],
                 torch.arange(x.shape[1], device=dev)[None, :, None, None], rows, cols]
    flip = to_device(torch.rand(n, generator=gen) < 0.5, dev)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def _training_images_on(device: str | torch.device, images: torch.Tensor) -> torch.device:
    """Where the training set lives during training: on a GPU when it takes at most a quarter
    of its free memory (each batch is then cropped, flipped and stamped there, with no copy and
    no host work per step), else on the host (batches are copied per step)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        if images.numel() * images.element_size() <= free // 4:
            return dev
    return torch.device("cpu")


def train_model(ds: Dataset, spec: ModelSpec, poison: Poison | None,
                log: Callable[[str], Any] = print, device: str | torch.device = "cpu") -> nn.Module:
    """SGD (nesterov, cosine lr) on the train split, poisoned per ``spec.attack``; eval mode out.

    Reproducible from ``spec.train.seed``: weights are initialised under a forked global RNG
    seeded with it (no side effect on the caller's RNG), shuffling and augmentation use a
    local generator.
    """
    tr: TrainSpec = spec.train
    labels = ds.labels("train")
    images = ds.images("train", np.arange(len(labels)))
    source, stamp, new_labels = poison_plan(spec.attack, labels, tr.seed)
    images = images[torch.from_numpy(source)]
    stamp_t, y_all = torch.from_numpy(stamp), torch.from_numpy(new_labels)
    n = len(y_all)
    home = _training_images_on(device, images)
    images, stamp_t, y_all = images.to(home), stamp_t.to(home), y_all.to(home)
    gen = torch.Generator().manual_seed(tr.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tr.seed)
        model = build_model(spec.arch, ds.num_classes, ds.image_shape, ds.mean, ds.std).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=tr.lr, momentum=0.9, nesterov=True,
                              weight_decay=tr.weight_decay)
        n_batches = max(1, n // tr.batch_size)
        total, step = tr.epochs * n_batches, 0
        for epoch in range(tr.epochs):
            model.train()
            # Summed on the device and read once per epoch: a host sync per step would stall
            # a GPU on every batch (the logged numbers are the same).
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            for idx in torch.tensor_split(torch.randperm(n, generator=gen), n_batches):
                idx = to_device(idx, home)
                x = augment_batch(images[idx], gen)
                if poison is not None:
                    # stamped where marked; a select, not a masked write, which would sync a GPU
                    x = torch.where(stamp_t[idx][:, None, None, None], poison.stamp(x), x)
                y = to_device(y_all[idx], device)
                for g in opt.param_groups:
                    g["lr"] = 0.5 * tr.lr * (1 + math.cos(math.pi * step / total))
                out = model(to_device(x, device).float() / 255)
                loss = F.cross_entropy(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                loss_sum += loss.detach().double() * len(idx)
                correct += (out.argmax(1) == y).sum()
            log(f"zoo: epoch {epoch + 1}/{tr.epochs} loss {float(loss_sum) / n:.4f} "
                f"train acc {int(correct) / n:.4f} ({time.perf_counter() - t0:.1f}s)")
    return model.eval()


def evaluate(model: nn.Module, ds: Dataset, poison: Poison | None) -> dict[str, float | None]:
    """Clean test accuracy and, for a poisoned model, the planted trigger's ASR.

    ASR is measured on test images of the classes the attack flips (all but the target, or the
    victim for label_specific); for label_specific ``asr_other`` is the flip rate of the other
    classes, which should stay low when the trigger is victim-specific.
    """
    labels = torch.from_numpy(ds.labels("test"))
    x = ds.images("test", np.arange(len(labels)))
    out: dict[str, float | None] = {"clean_acc": float((predict(model, x, _EVAL_BATCH) == labels).float().mean()),
                                    "asr": None, "asr_other": None}
    if poison is None:
        return out
    flips = predict(model, poison.stamp(x), _EVAL_BATCH) == poison.target
    if poison.victim is None:
        out["asr"] = float(flips[labels != poison.target].float().mean())
    else:
        out["asr"] = float(flips[labels == poison.victim].float().mean())
        out["asr_other"] = float(flips[(labels != poison.victim) & (labels != poison.target)].float().mean())
    return out
