"""Run one shard (P pairs of one model × method × variant) in-process and build its rows.

This is everything an actor does, without Ray: the Ray actor (``farm.cluster``) and
``farm bench`` both call :class:`ShardExecutor`, so the code measured by the benchmark is
the code the farm runs. Inputs arrive as plain data (model weights as bytes, uint8 images),
which is what lets a worker on another node run without access to the data or the zoo.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from farm.grid import ANY, Pair, Shard
from farm.methods import PairBatch, create_method
from farm.metrics import ROBUSTNESS, evaluate_pairs, predict
from farm.models.loading import frozen, load_checkpoint
from farm.rows import ShardAttempt, pair_row, shard_pair_seeds
from farm.triggers import trigger_size


@dataclass
class ModelPayload:
    """A model as bytes plus what is needed to rebuild it anywhere."""

    model_id: str
    arch: str
    fmt: str  # state_dict | torchscript
    blob: bytes
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: dict[str, Any] = field(default_factory=dict)  # dataset, model_kind, attack, gt_victim, gt_target

    def load(self, device: torch.device) -> torch.nn.Module:
        """Rebuild through the same checked loader as files (weights_only, shape checks).

        A TorchScript payload exists only because the driver loaded a trusted file and ran its
        first forward in a limited child process, so actors trust it and skip that probe."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            path.write_bytes(self.blob)
            model = load_checkpoint(path, self.fmt, self.arch, self.num_classes, self.image_shape,
                                    self.mean, self.std, device=device, trust_code=True, probe=False)
        return frozen(model)


def payload_from_module(model_id: str, arch: str, model: torch.nn.Module, num_classes: int,
                        image_shape: tuple[int, int, int], mean: tuple[float, ...], std: tuple[float, ...],
                        info: dict[str, Any]) -> ModelPayload:
    """Serialise a built model: a state dict unless it is TorchScript."""
    buf = io.BytesIO()
    if isinstance(model, torch.jit.ScriptModule):
        torch.jit.save(model, buf)
        fmt = "torchscript"
    else:
        torch.save(model.state_dict(), buf)
        fmt = "state_dict"
    return ModelPayload(model_id, arch, fmt, buf.getvalue(), num_classes, image_shape, mean, std, info)


def image_key(pair: Pair) -> str:
    """Attack/held-out image sets are per victim class, or per target for all-to-one pairs."""
    return f"any{pair.target}" if pair.victim == ANY else f"v{pair.victim}"


@dataclass
class PairImages:
    """uint8 attack and held-out images (with true labels) keyed by :func:`image_key`."""

    attack: dict[str, torch.Tensor]
    heldout: dict[str, torch.Tensor]
    heldout_labels: dict[str, torch.Tensor]


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("run.device is 'cuda' but this worker has no CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")


def precision_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``run.precision``: fp32 runs as is; bf16/fp16 autocast the model's convolutions and
    matmuls while variables, optimiser state and evaluation stay fp32 (METHODS.md numerics
    are defined in fp32; the drift is measured in docs/benchmarks.md)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@dataclass(frozen=True)
class ExecOptions:
    """How an executor runs a method: ``run.precision``, ``run.compile``, ``run.fold_batchnorm``
    (speed options of issue #11; measurements and drift in docs/benchmarks.md)."""

    precision: str = "fp32"
    compile: bool = False  # torch.compile the model used by the optimisation steps
    fold_batchnorm: bool = False  # fold eval-mode BatchNorm into the convolutions

    @classmethod
    def from_run(cls, run: Any) -> "ExecOptions":
        return cls(run.precision, run.compile, run.fold_batchnorm)


class InjectedFault(RuntimeError):
    """Raised by the fault-injection setting (tests of the retry path only)."""


def inject_fault(spec: str | None, shard_no: int, attempt: int) -> str | None:
    """Apply ``cluster.fault_injection``: 'exit:n' kills the process on the first attempt of
    shard n, 'raise:n' raises on every attempt of shard n, 'nan:n' poisons its first pair."""
    if not spec:
        return None
    kind, n = spec.split(":")
    if int(n) != shard_no:
        return None
    if kind == "exit" and attempt == 1:
        os._exit(17)
    if kind == "raise":
        raise InjectedFault(f"injected failure in shard {shard_no} (attempt {attempt})")
    return kind if kind == "nan" else None


class ShardExecutor:
    """Holds one model and one method on one device; runs shards of that job."""

    def __init__(self, payload: ModelPayload, method: str, params: dict[str, Any], variant: str,
                 images: PairImages, device: str = "auto", options: ExecOptions = ExecOptions()):
        self.device = pick_device(device)
        self.options = options
        self.payload = payload
        self.model = payload.load(self.device)
        if options.fold_batchnorm:
            from farm.models.fold import fold_batchnorm

            self.model = fold_batchnorm(self.model)
        # Compiled for the steps only: evaluation's varying batch shapes would recompile it.
        self.step_model = cast(torch.nn.Module, torch.compile(self.model, dynamic=True)) if options.compile else self.model
        augment = None
        if variant == "augmented":
            from farm.methods.augment import make_augment

            augment = make_augment(payload.mean)
        self.method = create_method(method, params, augment)
        if self.device.type == "cuda":  # page-locked, so each shard's copy to the GPU is one DMA
            images = PairImages({k: v.pin_memory() for k, v in images.attack.items()}, images.heldout,
                                images.heldout_labels)
        self.images = images
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._correct: dict[str, torch.Tensor] = {}  # per image key: clean prediction right?

    def correct(self, key: str) -> torch.Tensor:
        """Which held-out images of ``key`` the model classifies right (cached: shards of a job
        share their victims' images)."""
        if key not in self._correct:
            self._correct[key] = predict(self.model, self.images.heldout[key]) == self.images.heldout_labels[key]
        return self._correct[key]

    def invert(self, batch: PairBatch) -> list[Any]:
        with precision_context(self.device, self.options.precision):
            return self.method(self.step_model, batch)

    def _attack_batch(self, shard: Shard, batch_size: int, poison_first: bool) -> PairBatch:
        imgs = torch.stack([self.images.attack[image_key(p)] for p in shard.pairs])
        imgs = imgs.to(self.device, non_blocking=True).float() / 255.0
        if poison_first:
            imgs[0] = float("nan")
        return PairBatch([None if p.universal else p.victim for p in shard.pairs],
                         [p.target for p in shard.pairs], imgs, shard_pair_seeds(shard), batch_size)

    def run(self, shard: Shard, batch_size: int, run_id: str, config_hash: str, attempt: int = 1,
            fault: str | None = None, shard_no: int = -1) -> list[dict[str, Any]]:
        poison = inject_fault(fault, shard_no, attempt) == "nan"
        batch = self._attack_batch(shard, batch_size, poison)
        start = time.perf_counter()
        outcomes = self.invert(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        batch_wall = time.perf_counter() - start
        ok = [i for i, out in enumerate(outcomes) if out.failure is None]
        keys = [image_key(p) for p in shard.pairs]
        start = time.perf_counter()
        evaluated = dict(zip(ok, evaluate_pairs(
            self.model, [outcomes[i].trigger for i in ok], [self.images.heldout[keys[i]] for i in ok],
            [self.correct(keys[i]) for i in ok], [shard.pairs[i].target for i in ok])))
        eval_wall = time.perf_counter() - start  # the metrics are Python floats: the device is synced
        nan_metrics = dict.fromkeys(["asr", "asr_correct", *ROBUSTNESS], math.nan)
        at = ShardAttempt(shard, self.payload.info, run_id, config_hash, attempt)
        rows = []
        for i, (pair, seed, out) in enumerate(zip(shard.pairs, batch.seeds, outcomes)):
            size = trigger_size(out.trigger)
            m = evaluated.get(i, nan_metrics)
            rows.append(pair_row(
                at, pair, seed, out.trigger.kind, tuple(out.trigger.array.shape),
                trigger=out.trigger.to_bytes(),
                trigger_size=float(size) if out.converged else math.nan, raw_size=float(size),
                mask_l1=out.extra.get("mask_l1", math.nan), extra_json=json.dumps(out.extra, sort_keys=True),
                asr=m["asr"], asr_correct=m["asr_correct"], **{f"asr_{k}": m[k] for k in ROBUSTNESS},
                asr_attack=out.attack_asr, n_attack=int(batch.images.shape[1]),
                n_heldout=int(self.images.heldout[keys[i]].shape[0]),
                steps=out.steps, converged=out.converged, stop_reason=out.stop_reason, time_to_best=out.time_to_best,
                trace_t=[t for t, _ in out.trace], trace_size=[s for _, s in out.trace],
                loss_step=[e for e, _ in out.loss_curve], loss_value=[v for _, v in out.loss_curve],
                status="ok" if out.failure is None else "failed", reason=out.failure or "",
                wall_s=batch_wall / len(shard.pairs), batch_wall_s=batch_wall,
                eval_wall_s=eval_wall / len(shard.pairs), device=str(self.device),
                worker=self.worker))
        return rows
