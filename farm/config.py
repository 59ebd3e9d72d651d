"""The one validated config schema of a farm run, YAML loading and ``--set`` overrides.

Defaults here are the defaults of METHODS.md; method hyper-parameters live in each method's
own frozen ``Params`` dataclass (``farm.methods``) and are validated against it, so a typo
in ``methods[1].params.lr`` fails before any model is trained or Ray is started.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from farm.schema import ConfigError, build, parse, to_dict

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
ID_RULE = f"must match {_ID.pattern} (the whole id, no trailing newline) without '..'"
FAULT_INJECTION = re.compile(r"^(exit|raise|nan):\d+$")


def _bad_id(value: str) -> bool:
    """Ids become path components (run dirs, hive partitions): no '..', '/', spaces."""
    return not isinstance(value, str) or not _ID.fullmatch(value) or ".." in value


def is_safe_id(value: str) -> bool:
    """True for ids that can be a folder name under the output root (run ids, model ids)."""
    return not _bad_id(value)


@dataclass(frozen=True)
class RunSpec:
    name: str = "default"
    id: str | None = None  # fixed run id; default <name>-<utc time>-<config hash>
    seed: int = 0
    output: str = "results"  # local path or any pyarrow filesystem URI (file://, s3://, gs://)
    zoo_dir: str | None = None  # model cache; default <output>/zoo (local paths only)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Numeric precision of the methods' forward/backward: fp32, or autocast to bf16/fp16 (the
    # variables, optimiser and evaluation stay fp32). Drift in size/ASR: docs/benchmarks.md.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False  # torch.compile the model for the optimisation steps (compiles once per actor)
    fold_batchnorm: bool = False  # fold frozen BatchNorms into convolutions (float rounding; docs/benchmarks.md)

    def check(self) -> list[str]:
        out = []
        if _bad_id(self.name):
            out.append(f"name: {self.name!r} {ID_RULE}")
        if self.id is not None and _bad_id(self.id):
            out.append(f"id: {self.id!r} {ID_RULE}")
        if self.seed < 0:
            out.append(f"seed: must be >= 0 (numpy seeds are non-negative), got {self.seed}")
        return out


NUMERICS_FIELDS = ("precision", "compile", "fold_batchnorm")  # RunSpec fields that change pair results


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset by registry name; ``params`` are validated against that dataset's Params."""

    name: str = "synthetic"
    root: str | None = None  # local folder for real datasets
    download: bool = False  # allow torchvision to download (machines with internet only)
    params: dict[str, Any] = field(default_factory=dict)

    def check(self) -> list[str]:
        from farm.data import DATASETS

        if self.name not in DATASETS:
            return [f"name: unknown dataset {self.name!r}; expected one of {', '.join(sorted(DATASETS))}"]
        _, problems = parse(DATASETS[self.name].Params, self.params, "params")
        return problems + DATASETS[self.name].check_spec(self)


PATCH_ONLY = ("shape", "position")  # AttackSpec fields only patch attacks set


@dataclass(frozen=True)
class AttackSpec:
    """Ground truth of a zoo model's backdoor (or of a user model, where known)."""

    type: Literal["none", "badnets", "label_specific", "blend"] = "none"
    target: int = 0
    victim: int | None = None  # label_specific only
    patch_size: int = 3  # side of the square patch (badnets / label_specific)
    poison_rate: float = 0.1  # share of training images stamped and relabelled
    blend_alpha: float = 0.15  # blend attack only
    # patch attacks: the whole square, or a random polygon inside it (TrojAI-like shapes)
    shape: Literal["square", "polygon"] = "square"
    # patch attacks: the bottom-right corner (1-pixel margin), or a place drawn from the seed
    position: Literal["corner", "random"] = "corner"

    def check(self) -> list[str]:
        out = []
        if self.type == "label_specific" and self.victim is None:
            out.append("victim: required for type 'label_specific'")
        if self.type != "label_specific" and self.victim is not None:
            out.append(f"victim: only meaningful for type 'label_specific', not {self.type!r}")
        if not 0.0 < self.poison_rate < 1.0:
            out.append(f"poison_rate: must be in (0, 1), got {self.poison_rate}")
        if self.patch_size < 1:
            out.append(f"patch_size: must be >= 1, got {self.patch_size}")
        if self.victim is not None and self.victim == self.target:
            out.append("victim: must differ from target")
        for name in PATCH_ONLY:
            if self.type == "blend" and getattr(self, name) != AttackSpec.__dataclass_fields__[name].default:
                out.append(f"{name}: only patch attacks (badnets, label_specific) have one; blend covers the image")
        return out


# Fields added to AttackSpec after zoo keys and run hashes were first written. At their default
# they are left out of both identities, so a zoo entry trained and a run started before they
# existed keep their key and hash (the zoo is reused, the run resumes) across the upgrade.
ATTACK_FIELDS_SINCE_V1 = ("shape", "position")


def attack_identity(attack: AttackSpec) -> dict[str, Any]:
    """The attack as hashed into zoo keys and config hashes (later fields omitted at default)."""
    out = to_dict(attack)
    for name in ATTACK_FIELDS_SINCE_V1:
        if out.get(name) == AttackSpec.__dataclass_fields__[name].default:
            del out[name]
    return out


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 6
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    seed: int = 0

    def check(self) -> list[str]:
        out = []
        if self.epochs < 1:
            out.append(f"epochs: must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            out.append(f"batch_size: must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            out.append(f"lr: must be > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            out.append(f"weight_decay: must be >= 0, got {self.weight_decay}")
        return out


@dataclass(frozen=True)
class ModelSpec:
    """A model to scan: trained by the zoo (``source: zoo``) or loaded from a checkpoint."""

    id: str
    dataset: str  # key of ``datasets``
    arch: str = "small_cnn"
    source: Literal["zoo", "checkpoint"] = "zoo"
    attack: AttackSpec = field(default_factory=AttackSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    checkpoint: str | None = None  # path, for source: checkpoint
    format: Literal["state_dict", "torchscript", "trojai"] = "state_dict"
    # TorchScript is code: loaded only when true (or `--trust-code`); see docs/security.md.
    trust_code: bool = False

    def check(self) -> list[str]:
        from farm.models import ARCHS

        out = []
        if _bad_id(self.id):
            out.append(f"id: {self.id!r} {ID_RULE}")
        if self.format not in ("torchscript", "trojai") and self.arch not in ARCHS and not self.arch.startswith("torchvision:"):
            out.append(f"arch: unknown architecture {self.arch!r}; expected one of "
                       f"{', '.join(sorted(ARCHS))} or 'torchvision:<name>'")
        if self.source == "checkpoint" and not self.checkpoint:
            out.append("checkpoint: required when source is 'checkpoint'")
        if self.source == "zoo" and self.checkpoint:
            out.append("checkpoint: only used with source 'checkpoint'")
        if self.source == "zoo" and self.trust_code:
            out.append("trust_code: only used with source 'checkpoint' (zoo models are state dicts)")
        return out


def params_problems(method: str, params: dict[str, Any]) -> list[str]:
    """``params`` against ``method``'s Params: unknown or mistyped fields, then its range checks,
    as ``params.<field>: ...`` lines. Every config that overrides a method's Params (benchmark
    methods, scan scanners, harden methods) checks them here, at load time, not in a worker."""
    from farm.methods import method_class, method_params

    _, problems = parse(method_class(method).Params, params, "params")
    if problems:
        return problems
    return [f"params.{m}" for m in getattr(method_params(method, params), "check", lambda: [])()]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    variants: list[Literal["plain", "augmented"]] = field(default_factory=lambda: ["plain"])

    def check(self) -> list[str]:
        from farm.methods import METHODS

        if self.name not in METHODS:
            return [f"name: unknown method {self.name!r}; expected one of {', '.join(sorted(METHODS))}"]
        out = params_problems(self.name, self.params)
        if not self.variants:
            out.append("variants: must list at least one of 'plain', 'augmented'")
        if len(set(self.variants)) != len(self.variants):
            out.append(f"variants: duplicates in {self.variants}")
        return out


@dataclass(frozen=True)
class PairsSpec:
    """Which (victim, target) pairs each model is scanned on."""

    mode: Literal["all", "sample", "list"] = "all"
    sample: int | None = None  # mode 'sample': this many pairs drawn with run.seed
    list: list[tuple[int, int]] = field(default_factory=list)  # mode 'list': [victim, target]
    universal: bool = False  # also scan (any, target) for every target: K extra jobs
    victim_images: int = 50  # N, attack set per pair (METHODS.md §1)
    heldout_images: int | None = None  # cap on held-out images per pair; null = all
    batch_size: int = 32  # B = min(batch_size, N) images per pair per step

    def check(self) -> list[str]:
        out = []
        if self.mode == "sample" and (self.sample is None or self.sample < 1):
            out.append("sample: mode 'sample' needs sample >= 1")
        if self.mode == "list" and not self.list:
            out.append("list: mode 'list' needs at least one [victim, target]")
        if self.mode != "list" and self.list:
            out.append(f"list: only used with mode 'list', mode is {self.mode!r}")
        for i, (v, t) in enumerate(self.list):
            if v == t:
                out.append(f"list[{i}]: victim and target must differ, got [{v}, {t}]")
            if v < 0 or t < 0:
                out.append(f"list[{i}]: classes must be >= 0, got [{v}, {t}]")
        if self.victim_images < 1:
            out.append(f"victim_images: must be >= 1, got {self.victim_images}")
        if self.heldout_images is not None and self.heldout_images < 1:
            out.append(f"heldout_images: must be >= 1 or null, got {self.heldout_images}")
        if self.batch_size < 1:
            out.append(f"batch_size: must be >= 1, got {self.batch_size}")
        return out


@dataclass(frozen=True)
class ClusterSpec:
    # ray: shards on Ray actors; local: one after another in the farm process, no Ray (farm.local)
    executor: Literal["ray", "local"] = "ray"
    address: str | None = None  # null: start a local Ray; "auto": join the running cluster
    num_cpus: int | None = None  # local Ray only; default: all cores
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.5  # used only where the cluster has GPUs; fractional shares a GPU
    max_actors: int | None = None  # cap on concurrent actors; default fills the resources
    # P: pairs optimised together as one batch (one shard); "auto" measures it per model on
    # the actors' device before the run (farm.autotune) and records it in the manifest.
    pairs_per_batch: int | Literal["auto"] = 50
    max_attempts: int = 3  # a shard is tried this often before its pairs are stored as failed
    fault_injection: str | None = None  # testing only: "exit:<shard-no>" or "raise:<shard-no>"
    # Ray token auth of a local run; "disabled" only on a trusted network (docs/security.md).
    ray_auth: Literal["token", "disabled"] = "token"

    def check(self) -> list[str]:
        import os

        out = []
        cores = os.cpu_count() or 1
        if self.executor == "local" and self.address is not None:
            out.append(f"address: {self.address!r} joins a Ray cluster, but executor is 'local' (no Ray); "
                       "drop the address (or --address), or set executor: ray")
        if self.num_cpus is not None and not 1 <= self.num_cpus <= cores and self.address is None:
            out.append(f"num_cpus: {self.num_cpus} but this machine has {cores} core(s); a local Ray would start "
                       f"that many actors on them. Use 1..{cores}, or null for all cores")
        if self.cpus_per_actor <= 0:
            out.append(f"cpus_per_actor: must be > 0, got {self.cpus_per_actor}")
        if not 0 < self.gpus_per_actor <= 8:
            out.append(f"gpus_per_actor: must be in (0, 8], got {self.gpus_per_actor}")
        if self.pairs_per_batch != "auto" and self.pairs_per_batch < 1:
            out.append(f"pairs_per_batch: must be >= 1, got {self.pairs_per_batch}")
        if self.max_attempts < 1:
            out.append(f"max_attempts: must be >= 1, got {self.max_attempts}")
        if self.max_actors is not None and self.max_actors < 1:
            out.append(f"max_actors: must be >= 1, got {self.max_actors}")
        if self.fault_injection is not None and not FAULT_INJECTION.match(self.fault_injection):
            out.append(f"fault_injection: expected 'exit:<n>', 'raise:<n>' or 'nan:<n>', got {self.fault_injection!r}")
        return out


@dataclass(frozen=True)
class TrackingSpec:
    enabled: bool = True
    uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///<output>/mlflow.db
    experiment: str = "farm"
    # a tracking server is probed 3 times with this timeout each before logging is skipped
    # with a warning (the rows are safe in Parquet): raise it for a slow link
    connect_timeout_s: float = 5.0

    def check(self) -> list[str]:
        if not self.connect_timeout_s > 0:
            return [f"connect_timeout_s: must be > 0 seconds, got {self.connect_timeout_s}"]
        return []


@dataclass(frozen=True)
class Config:
    run: RunSpec = field(default_factory=RunSpec)
    datasets: dict[str, DatasetSpec] = field(default_factory=lambda: {"synthetic": DatasetSpec()})
    models: list[ModelSpec] = field(default_factory=list)
    methods: list[MethodSpec] = field(default_factory=list)
    pairs: PairsSpec = field(default_factory=PairsSpec)
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)

    def check(self) -> list[str]:
        out = []
        if not self.models:
            out.append("models: at least one model is required")
        if not self.methods:
            out.append("methods: at least one method is required")
        ids = [m.id for m in self.models]
        for dup in sorted({i for i in ids if ids.count(i) > 1}):
            out.append(f"models: duplicate id {dup!r}")
        names = [m.name for m in self.methods]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            out.append(f"methods: method {dup!r} listed twice; put both variants in one entry")
        for i, m in enumerate(self.models):
            if m.dataset not in self.datasets:
                out.append(f"models[{i}].dataset: {m.dataset!r} is not a key of datasets "
                           f"({', '.join(sorted(self.datasets))})")
                continue
            k = self.num_classes(m.dataset)
            if k is None:
                continue
            for fld in ("target", "victim"):
                c = getattr(m.attack, fld)
                if c is not None and not 0 <= c < k:
                    out.append(f"models[{i}].attack.{fld}: class {c} but dataset {m.dataset!r} has {k} classes")
            for j, (v, t) in enumerate(self.pairs.list):
                if v >= k or t >= k:
                    out.append(f"pairs.list[{j}]: [{v}, {t}] but model {m.id!r} has {k} classes (0..{k - 1})")
            if self.pairs.mode == "sample" and self.pairs.sample and self.pairs.sample > k * (k - 1):
                out.append(f"pairs.sample: {self.pairs.sample} > {k * (k - 1)} pairs of model {m.id!r}")
        return out

    def num_classes(self, dataset: str) -> int | None:
        """K of a configured dataset where it is known without reading data."""
        from farm.data import DATASETS

        spec = self.datasets[dataset]
        if spec.name not in DATASETS:
            return None
        return DATASETS[spec.name].known_num_classes(spec)

    # ---- identity -----------------------------------------------------------------------
    def results_dict(self) -> dict[str, Any]:
        """The parts of the config that determine pair results (hashed for resume)."""
        d = to_dict(self)
        # trust_code decides whether a file may be loaded, not what it computes: granting it
        # with --trust-code must not change the run's identity (resume keeps working).
        # Attack fields newer than a run keep its hash at their default (attack_identity).
        d["models"] = [{k: v for k, v in m.items() if k != "trust_code"}
                       | {"attack": attack_identity(spec.attack)}
                       for m, spec in zip(d["models"], self.models)]
        out = {k: d[k] for k in ("datasets", "models", "methods", "pairs")} | {"seed": self.run.seed}
        # Precision, compile and BatchNorm folding change every pair's arithmetic (a resume with
        # another value would mix numerics in one run). Only non-default values enter, so every
        # run made before they did (all fp32, uncompiled, unfolded) keeps its hash.
        numerics = {k: getattr(self.run, k) for k in NUMERICS_FIELDS if getattr(self.run, k) != getattr(RunSpec, k)}
        return out | ({"numerics": numerics} if numerics else {})

    def hash(self) -> str:
        blob = json.dumps(self.results_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(to_dict(self), sort_keys=False)


def _set_path(data: dict, dotted: str, value: Any) -> None:
    """Apply one ``--set a.b.0.c=value`` override; list indices are integers."""
    keys = dotted.split(".")
    node: Any = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError([f"--set {dotted}: {'.'.join(keys[:i]) or '<root>'} is a list of "
                                   f"{len(node)}; {key!r} is not a valid index"])
            key = int(key)  # type: ignore[assignment]
            if last:
                node[key] = value
            else:
                node = node[key]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise ConfigError([f"--set {dotted}: {'.'.join(keys[:i])} is a value, not a mapping"])


def parse_overrides(items: list[str] | None) -> list[tuple[str, Any]]:
    out = []
    for item in items or []:
        if "=" not in item:
            raise ConfigError([f"--set {item!r}: expected key=value (value in YAML syntax)"])
        key, raw = item.split("=", 1)
        try:
            out.append((key.strip(), yaml.safe_load(raw)))
        except yaml.YAMLError as exc:
            raise ConfigError([f"--set {key}: value {raw!r} is not valid YAML ({exc})"]) from None
    return out


def load_raw(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: no such config file"])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"{path}{where}: malformed YAML: {getattr(exc, 'problem', exc)}"], str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: top level must be a mapping, got {type(data).__name__}"], str(path))
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (default: configs/default.yaml), apply ``--set`` overrides, validate."""
    path = Path(path) if path else DEFAULT_CONFIG
    return config_from_dict(load_raw(path), overrides, source=str(path))


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None, source: str | None = None) -> Config:
    """Validate plain data (a YAML file's, a run's stored config) after ``--set`` overrides."""
    for key, value in parse_overrides(overrides):
        _set_path(data, key, value)
    return build(Config, data, "", source=source)


def config_problems(path: str | Path | None = None, overrides: list[str] | None = None) -> tuple[Config | None, list[str]]:
    """Every problem of a config file, and the config as far as it parsed (``farm validate``
    checks the files of that too, so a bad field never hides a missing checkpoint)."""
    path = Path(path) if path else DEFAULT_CONFIG
    data = load_raw(path)
    for key, value in parse_overrides(overrides):
        _set_path(data, key, value)
    cfg, problems = parse(Config, data, "")
    return cfg, problems


def trusting_code(cfg: Config) -> Config:
    """``--trust-code``: every checkpoint model may be TorchScript (docs/security.md)."""
    return replace(cfg, models=[replace(m, trust_code=True) if m.source == "checkpoint" else m for m in cfg.models])


__all__ = [
    "Config", "RunSpec", "DatasetSpec", "AttackSpec", "TrainSpec", "ModelSpec", "MethodSpec",
    "PairsSpec", "ClusterSpec", "TrackingSpec", "ConfigError", "load_config", "config_from_dict",
    "DEFAULT_CONFIG",
]
