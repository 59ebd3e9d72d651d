"""The ``farm`` command. User errors print one clear message and exit 2, never a traceback.

Heavy dependencies (Ray, MLflow) are imported by the subcommands that need them, so
``farm validate`` is instant and ``farm bench`` and ``farm run --local`` run on machines without Ray
or MLflow.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

from farm.config import DEFAULT_CONFIG, Config, ConfigError, load_config, trusting_code
from farm.errors import FarmError

EXIT_USER = 2
TRUST_HELP = ("load TorchScript checkpoints (including TrojAI folders holding one): they are programs that can "
              "write files; only for files whose author you trust (docs/security.md)")


def _trusted(cfg: Config, args: argparse.Namespace) -> Config:
    return trusting_code(cfg) if getattr(args, "trust_code", False) else cfg


def _config(args: argparse.Namespace) -> Config:
    return _trusted(load_config(args.config, args.set), args)


def cmd_validate(args: argparse.Namespace) -> int:
    """Config problems and, unless --no-check-files, missing files: all reported at once."""
    from farm.config import config_problems
    from farm.preflight import file_problems

    source = str(args.config or DEFAULT_CONFIG)
    cfg, problems = config_problems(args.config, args.set)
    if cfg is not None and not args.no_check_files:
        problems += file_problems(_trusted(cfg, args))
    if problems:
        raise ConfigError(problems, source)
    assert cfg is not None  # no problems: it parsed
    from farm.grid import jobs

    print(f"{source}: valid (config hash {cfg.hash()})"
          + ("; files not checked (--no-check-files)" if args.no_check_files else "; files present"))
    print(f"  {len(cfg.models)} model(s), {len(cfg.methods)} method(s), {len(jobs(cfg))} job(s); "
          f"pairs: {cfg.pairs.mode}{' + universal' if cfg.pairs.universal else ''}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    stored = bool(args.resume and not args.config)  # resume with the run's own config
    output = dict(kv.split("=", 1) for kv in (args.set or []) if kv.startswith("run.output=")).get(
        "run.output", "results")
    if stored:
        from farm.resume import finished

        done = finished(output, args.resume, args.set)
        if done is not None:  # before importing torch or Ray: a no-op must be instant
            print(f"run {args.resume} is already complete ({done.manifest().get('pairs')} pairs stored in "
                  f"{done.run_dir}); nothing to do. Tables: farm tables {args.resume} --output {output}")
            return 0
    from farm.runner import execute, format_summary, stored_config

    cfg = _trusted(stored_config(output, args.resume, args.set), args) if stored else _config(args)
    if args.local and args.address:
        raise ConfigError(["--local runs without Ray; --address joins a Ray cluster. Pass one of them"])
    if args.address:
        cfg = replace(cfg, cluster=replace(cfg.cluster, address=args.address))
    if args.local:
        cfg = replace(cfg, cluster=replace(cfg.cluster, executor="local", address=None))
    result = execute(cfg, resume=args.resume)
    print()
    print(format_summary(result.frame))
    print()
    print(f"run id:   {result.run_id}")
    print(f"parquet:  {result.store.pairs_dir}  (farm tables {result.run_id} --output {cfg.run.output})")
    if result.tracking_uri:
        print(f"mlflow:   {result.tracking_uri}  (farm ui --output {cfg.run.output})")
    print(f"time:     {result.wall_s:.1f} s")
    return 0


def _is_scan_config(path: str | None) -> bool:
    """A `farm scan` config (it names scanners or a scan zoo, no models) rather than a run config."""
    if path is None:
        return False
    from farm.config import load_raw

    raw = load_raw(path)
    return isinstance(raw, dict) and "models" not in raw and ("scanners" in raw or "zoo" in raw)


def _scan_zoo(args: argparse.Namespace) -> int:
    """`farm zoo SCAN_CONFIG`: train (or reuse) the scan zoo's M clean + M poisoned models in this
    process, so `farm scan` finds them cached; one line per model with its drawn attack."""
    from farm.data import load_dataset
    from farm.models.zoo import ensure_model
    from farm.scan.config import load_scan_config
    from farm.scan.zoo import zoo_specs

    if args.set or args.address:
        raise FarmError("farm zoo: --set and --address apply to run configs; a scan config's zoo trains here, "
                        "or inside `farm scan` on its Ray")
    cfg = load_scan_config(args.config)
    if cfg.round_dir:
        raise FarmError(f"farm zoo: {args.config} scans the TrojAI round {cfg.round_dir}; there is no zoo to train")
    specs = zoo_specs(cfg, load_dataset(cfg.dataset).num_classes)
    rows = []
    for i, spec in enumerate(specs, 1):
        print(f"[{i}/{len(specs)}] {spec.id}")
        # one thread, as `farm scan`'s tasks train a model they miss: the same weights
        entry = ensure_model(spec, cfg.dataset, Path(cfg.zoo_dir), log=print, threads=1)
        a = spec.attack
        what = a.type if a.type in ("none", "blend") else f"{a.type} {a.patch_size}px {a.shape} {a.position}"
        rows.append(f"  {spec.id:22s} {spec.arch:10s} {what:38s} target={a.target if a.type != 'none' else '-'} "
                    f"clean_acc={_pct(entry.meta.get('clean_acc'))} asr={_pct(entry.meta.get('asr'))}")
    print(f"\nscan zoo of {args.config}: {len(specs)} models in {cfg.zoo_dir}")
    print("\n".join(rows))
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    if _is_scan_config(args.config):
        return _scan_zoo(args)
    cfg = _config(args)
    from farm.prepare import prepare_models, zoo_dir

    parallel = None
    if args.address:  # train the missing models as Ray tasks on that cluster (jobs/zoo.py)
        from farm.cluster import connect
        from farm.models.zoo_jobs import ray_trainer

        connect(args.address, ray_auth=cfg.cluster.ray_auth)
        parallel = ray_trainer(cfg.cluster.cpus_per_actor)
    models = prepare_models(cfg, print, parallel_train=parallel)
    print(f"\nzoo: {zoo_dir(cfg)} (manifest: {zoo_dir(cfg) / 'manifest.json'})")
    for mid, m in models.items():
        acc, asr = m.meta.get("clean_acc"), m.meta.get("asr")
        print(f"  {mid:24s} {m.spec.arch:12s} {m.payload.info['model_kind']:9s} "
              f"clean_acc={_pct(acc)} asr={_pct(asr)}")
    return 0


def _pct(value: float | None) -> str:
    """A stored fraction as the percent every farm summary shows."""
    return "-" if value is None else f"{100 * value:.1f}%"


def cmd_tables(args: argparse.Namespace) -> int:
    from farm.report.tables import regenerate
    from farm.store import RunStore

    store = RunStore(args.output, args.run_id)
    if store.exists() and store.manifest().get("kind") == "scan":  # a `farm scan` run: Table 8
        from farm.scan.report import write_scan_tables

        print(f"tables written to {write_scan_tables(store, args.out, log_mlflow=not args.no_mlflow)}")
        return 0
    if store.exists() and store.manifest().get("kind") == "harden":  # a `farm harden` run: Table 7
        from farm.harden.report import write_harden_tables

        print(f"tables written to {write_harden_tables(store, args.out, log_mlflow=not args.no_mlflow)}")
        return 0

    out = regenerate(args.run_id, output=args.output, out_dir=args.out, formats=args.format.split(","),
                     tracking_uri=args.tracking_uri, log_mlflow=not args.no_mlflow, align=args.align,
                     trust_code=args.trust_code, allow_stored_uri=args.allow_tracking_uri)
    print(f"tables and figures written to {out}")
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    from farm.scan.config import load_scan_config
    from farm.scan.report import write_scan_tables
    from farm.scan.run import execute

    cfg = load_scan_config(args.config)
    store = execute(cfg, Path(args.config).read_text(), trust_code=args.trust_code)
    out = write_scan_tables(store, log_mlflow=not args.no_mlflow)
    print(f"scan {cfg.run_id}: rows in {store.run_dir}/scan, Table 8 analogue in {out}")
    return 0


def cmd_tune_bounds(args: argparse.Namespace) -> int:
    from farm.report.files import write_frames
    from farm.scan.run import read_scan
    from farm.scan.tune import bounds_yaml, tune_bounds
    from farm.store import RunStore

    store = RunStore(args.output, args.run_id)
    if not store.exists() or store.manifest().get("kind") != "scan":
        raise FarmError(f"{store.run_dir} is not a `farm scan` run (tune the bounds on a scan of held-out models)")
    models = read_scan(store)
    tuned = tune_bounds(models) if not models.empty else None
    if tuned is None or tuned.empty:
        raise FarmError(f"scan run {args.run_id!r} has no finished K-Arm model rows yet")
    folder = write_frames(Path(args.out or f"{store.run_dir}/tables"), {"karm_bounds": tuned}, floatfmt=".4g")
    print(tuned.to_string(index=False))
    print(f"\nwritten to {folder}/karm_bounds.{{md,csv}}; for a scan config of OTHER models:\n")
    print(bounds_yaml(tuned), end="")
    return 0


def cmd_harden(args: argparse.Namespace) -> int:
    from farm.harden.config import load_harden_config
    from farm.harden.report import write_harden_tables
    from farm.harden.run import execute

    cfg = load_harden_config(args.config)
    store = execute(cfg, Path(args.config).read_text())
    out = write_harden_tables(store, log_mlflow=not args.no_mlflow)
    print(f"harden {cfg.run_id}: rows in {store.run_dir}/harden, Table 7 analogue in {out}")
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    from farm.align import align_run

    out = align_run(args.run_id, output=args.output, ref=args.ref, address=args.address, trust_code=args.trust_code)
    print(f"alignment written to {out}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from farm.ui import JOB_RUNNER_ENV, UiOptions, check, command, landing_urls, serve, server_env

    opts = UiOptions(args.output, args.tracking_uri, args.host, args.port, args.expose, args.workers,
                     access_log=args.verbose > 0)
    check(opts)
    if args.dry_run:
        # the command as serve() runs it, with the one setting it adds to the environment
        print(f"{JOB_RUNNER_ENV}={server_env()[JOB_RUNNER_ENV]} " + " ".join(command(opts)))
        print("then open:\n  " + "\n  ".join(landing_urls(opts)))
        return 0
    return serve(opts)


def cmd_ls(args: argparse.Namespace) -> int:
    from farm.runs import format_runs, list_runs

    print(format_runs(list_runs(args.output), args.output))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from farm.runs import describe

    print(describe(args.output, args.run_id))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from farm.bench import bench

    cfg = _config(args)
    if args.baseline and set(args.method) - {"ours", "nc"}:
        raise ConfigError([f"--baseline: only ours and nc have a paper-style baseline; drop --baseline or time "
                           f"{', '.join(sorted(set(args.method) - {'ours', 'nc'}))} without it"])
    ids = [m.id for m in cfg.models]
    unknown = [m for m in args.model or [] if m not in ids]
    if unknown:  # before the zoo trains or loads anything
        raise ConfigError([f"--model {', '.join(unknown)}: not in the config; it has {', '.join(ids)}"])
    bench(cfg, model_ids=args.model, methods=args.method, batch_sizes=args.pairs_per_batch, pairs=args.pairs,
          epochs=args.epochs, device=args.device, out=args.out, baseline=args.baseline,
          baseline_pairs=args.baseline_pairs, rounds=args.rounds, processes=args.processes)
    return 0


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def batch_sizes(text: str) -> list[int | str]:
    """argparse type for --pairs-per-batch: a comma list of integers >= 1 and 'auto'."""
    try:
        return [x if x == "auto" else positive_int(x) for x in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers >= 1 or 'auto', got {text!r}") from None


def method_names(text: str) -> list[str]:
    """argparse type for --method: a comma list of registered methods."""
    from farm.methods import METHODS

    names = text.split(",")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {', '.join(unknown)}; choose from "
                                         f"{', '.join(sorted(METHODS))}")
    return names


def cmd_compare(args: argparse.Namespace) -> int:
    from farm.compare import compare, resolve

    comp = compare(resolve(args.run_a, args.output), resolve(args.run_b, args.output_b or args.output))
    print(comp.report())
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        comp.joined.drop(columns=["trigger_a", "trigger_b"]).to_csv(args.csv, index=False)
        print(f"per-pair differences written to {args.csv}")
    return 0 if comp.identical else 1


def build_parser() -> argparse.ArgumentParser:
    from farm import __version__

    p = argparse.ArgumentParser(prog="farm", description="Ray-distributed benchmark farm for backdoor "
                                "trigger inversion: every pair, every model, every method. ASR is reported in "
                                "percent in every summary, table, heat map and MLflow metric.")
    p.add_argument("--version", action="version", version=f"farm {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more output: -v shows MLflow's info messages (schema migrations), Ray's "
                        "authentication notices and the MLflow UI's request log, -vv MLflow's debug messages "
                        "(default: farm's own messages, warnings and progress bars)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("config", nargs="?", help=f"YAML config (default: {DEFAULT_CONFIG.name})")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config field, e.g. --set methods.0.params.epochs=50 (repeatable)")

    def with_output(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--output", default="results", help="results root the runs live under: a folder or a URI "
                        "such as s3://bucket/prefix (default: results)")

    sp = sub.add_parser("run", help="run a benchmark: zoo, all pairs through Ray (or --local), Parquet, MLflow")
    with_config(sp)
    sp.add_argument("--resume", metavar="RUN_ID", help="continue a run: only the pairs it has not stored run "
                    "(without CONFIG: the run's own config; --set run.output=ROOT says where it lives)")
    sp.add_argument("--address", help="Ray address ('auto' joins a running cluster); overrides cluster.address")
    sp.add_argument("--local", action="store_true", help="no Ray: run the shards one after another in this "
                    "process on one device (CUDA if present); same as --set cluster.executor=local")
    sp.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("validate", help="check a config and the files it names; list every problem at once")
    with_config(sp)
    sp.add_argument("--no-check-files", action="store_true",
                    help="skip the checks that checkpoints and dataset roots exist (for paths that exist only on "
                         "the cluster's nodes)")
    sp.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    sp.set_defaults(func=cmd_validate)

    sp = sub.add_parser("zoo", help="train (or reuse) the config's zoo models and print their accuracy/ASR "
                        "(a `farm scan` config: its M clean + M poisoned scan zoo)")
    with_config(sp)
    sp.add_argument("--address", help="Ray address: train missing models as tasks there ('auto': running cluster); "
                    "without it they train here one after another, each with cluster.cpus_per_actor threads like a "
                    "Ray task, so both give the same weights")
    sp.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    sp.set_defaults(func=cmd_zoo)

    sp = sub.add_parser("ls", help="list the runs under a results root with status and pairs done")
    with_output(sp)
    sp.set_defaults(func=cmd_ls)

    sp = sub.add_parser("show", help="one run: status, pairs done per job, where its files are, what to do next")
    sp.add_argument("run_id", help="run id (a folder name under --output; `farm ls` lists them)")
    with_output(sp)
    sp.set_defaults(func=cmd_show)

    sp = sub.add_parser("tables", help="regenerate tables and heat maps of a run from its Parquet files")
    sp.add_argument("run_id", help="run id (a folder name under --output)")
    with_output(sp)
    sp.add_argument("--out", help="folder for the tables (default: <output>/<run_id>/tables; ./<run_id>-tables "
                    "for a run on an object store)")
    sp.add_argument("--format", default="md,csv", help="comma list of md, csv, tex (default: md,csv)")
    sp.add_argument("--tracking-uri", help="MLflow URI to log to (default: $MLFLOW_TRACKING_URI, else the sqlite "
                    "store of the results folder)")
    sp.add_argument("--allow-tracking-uri", action="store_true",
                    help="log to the tracking.uri stored in the run's config.yaml (off: a received folder must not "
                    "choose where your tables go)")
    sp.add_argument("--no-mlflow", action="store_true", help="write files only, do not log to MLflow")
    sp.add_argument("--align", action="store_true",
                    help="compute a missing alignment first (`farm align`): loads and runs the run's models, so only "
                    "for folders you trust; without it, missing alignment maps are reported as missing")
    sp.add_argument("--trust-code", action="store_true", help=TRUST_HELP + "; with --align")
    sp.set_defaults(func=cmd_tables)

    sp = sub.add_parser("scan", help="K-Arm and MAD backdoor scanning of a clean+poisoned zoo (Table 8); resumes")
    sp.add_argument("config", help="scan YAML config, e.g. configs/scan.yaml")
    sp.add_argument("--no-mlflow", action="store_true", help="write files only, do not log to MLflow")
    sp.add_argument("--trust-code", action="store_true", help=TRUST_HELP + " (round_dir: a TrojAI round)")
    sp.set_defaults(func=cmd_scan)

    sp = sub.add_parser("tune-bounds", help="tune K-Arm's decision bounds per scanner on a scan run of held-out "
                        "models; prints them as scan-config YAML")
    sp.add_argument("run_id", help="a `farm scan` run of models the evaluation will not use")
    with_output(sp)
    sp.add_argument("--out", help="folder for karm_bounds.{md,csv} (default: <output>/<run_id>/tables)")
    sp.set_defaults(func=cmd_tune_bounds)

    sp = sub.add_parser("harden", help="adversarial fine-tuning with inverted triggers, class distances before/after "
                        "(Table 7); resumes")
    sp.add_argument("config", help="harden YAML config, e.g. configs/harden.yaml")
    sp.add_argument("--no-mlflow", action="store_true", help="write files only, do not log the tables to MLflow")
    sp.set_defaults(func=cmd_harden)

    sp = sub.add_parser("align", help="align every method's stored triggers with ours (by size, by ASR) on Ray")
    sp.add_argument("run_id", help="run id (a folder name under --output)")
    with_output(sp)
    sp.add_argument("--ref", default="ours", help="reference method (default: ours)")
    sp.add_argument("--address", help="Ray address ('auto' joins a running cluster)")
    sp.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    sp.set_defaults(func=cmd_align)

    sp = sub.add_parser("ui", help="serve the MLflow UI for a results folder on 127.0.0.1")
    sp.add_argument("--output", default="results", help="results folder whose mlflow.db and mlartifacts/ to serve "
                    "(default: results)")
    sp.add_argument("--tracking-uri", help="serve this MLflow store instead of <output>/mlflow.db")
    sp.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: local only; any other "
                    "address needs --expose)")
    sp.add_argument("--expose", action="store_true",
                    help="allow a non-loopback --host: the MLflow UI has no authentication (docs/security.md)")
    sp.add_argument("--port", type=int, default=5000, help="port to listen on; checked free first (default 5000)")
    sp.add_argument("--workers", type=positive_int, default=1,
                    help="server worker processes (default 1: starts in seconds; MLflow's own default is 4)")
    sp.add_argument("--dry-run", action="store_true", help="print the command and landing URLs instead of serving")
    sp.set_defaults(func=cmd_ui)

    sp = sub.add_parser("bench", help="time methods in-process (no Ray) for several batch sizes P",
                        description="Time methods over the same pairs in-process for several pairs-per-batch P. "
                                    "The default sweep (4 P x 90 pairs x 5 epochs) takes about 15 min on 2 CPU "
                                    "cores; --pairs 10 --pairs-per-batch 1,10 gives a first look in about a minute.")
    with_config(sp)
    sp.add_argument("--model", type=lambda t: t.split(","), help="model id, or a comma list (default: the "
                    "config's first); checked against the config before any model loads")
    sp.add_argument("--method", type=method_names, default="ours", help="method, or a comma list (default: ours)")
    sp.add_argument("--pairs-per-batch", type=batch_sizes, default="1,10,45,90",
                    help="comma list of P to time; 'auto' adds the P the autotuner picks (default: 1,10,45,90)")
    sp.add_argument("--pairs", type=positive_int, default=90, help="pairs timed per P (default 90)")
    sp.add_argument("--epochs", type=positive_int, default=5,
                    help="epochs per timing, for every method with epochs (both halves of nc_prune); CW has none "
                         "and keeps its iteration schedule (default 5)")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to time (default auto)")
    sp.add_argument("--out", help="also write the timings as CSV here")
    sp.add_argument("--baseline", action="store_true",
                    help="also time a paper-style one-pair loop (torch.optim.Adam, no batching) and print "
                         "each configuration's speed as a multiple of it (ours and nc only)")
    sp.add_argument("--baseline-pairs", type=positive_int, default=4,
                    help="pairs the baseline times per round (default 4)")
    sp.add_argument("--rounds", type=positive_int, default=1,
                    help="repeat baseline and every P this many times, interleaved; medians reported (default 1)")
    sp.add_argument("--processes", type=positive_int, default=1,
                    help="run the farm's configurations in N processes at once, each with 1/N of the threads "
                         "(as N actors share a machine; shards of P dealt round-robin), the baseline in this "
                         "process with all of them: the whole-machine comparison (default 1: one process)")
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("compare", help="compare two runs pair by pair (exit 0 identical, 1 different)",
                        description="Join two runs on (model, method, variant, victim, target) and summarise "
                                    "per-pair differences of trigger bytes, size, ASR, steps and status. "
                                    "Exit status: 0 identical, 1 different, 2 error.")
    sp.add_argument("run_a", help="run id under --output, or the run folder's path")
    sp.add_argument("run_b", help="run id under --output-b (default: --output), or the run folder's path")
    sp.add_argument("--output", help="results root of run A (default: results, or the folder given)")
    sp.add_argument("--output-b", help="results root of run B (default: same as --output)")
    sp.add_argument("--csv", help="also write every joined pair's values and differences as CSV here")
    sp.set_defaults(func=cmd_compare)
    return p


class Terminated(BaseException):
    """SIGTERM as an exception, so a terminated run unwinds like Ctrl-C: the run lock is
    released and its local Ray is shut down instead of left listening."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def _shutdown_ray() -> bool:
    """Shut down this process's Ray, if it started or joined one (not with ``--local``)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        return True
    return False


def configure_output(verbose: int) -> None:
    """Quiet by default: farm's own messages and warnings; MLflow's INFO lines (database
    migrations) and Ray's token-auth notices only with -v. ANSI colour codes never go into
    piped output (or anywhere with $NO_COLOR set).

    Environment variables, not logger levels, because MLflow and Ray configure their loggers
    when imported (later, by the subcommands) and Ray's workers inherit the environment. A
    value the user set wins."""
    level = "WARNING" if verbose == 0 else "INFO" if verbose == 1 else "DEBUG"
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", level)
    if not sys.stderr.isatty() or "NO_COLOR" in os.environ:
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # "(_train pid=…)" prefixes without escape codes
    logging.getLogger("alembic").setLevel(level)  # MLflow's schema migrations
    if verbose == 0:
        # Ray logs at WARNING that a local cluster started with token authentication, which
        # farm always sets up (farm.ray_safety): expected, so not worth a line per run.
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_output(args.verbose)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except FarmError as exc:
        print(f"farm {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except (KeyboardInterrupt, Terminated, SystemError) as exc:
        # Inside ray.wait a signal handler's exception comes back wrapped in a SystemError.
        cause = exc.__cause__ if isinstance(exc, SystemError) else exc
        if not isinstance(cause, (KeyboardInterrupt, Terminated)):
            raise
        ray_note = "; Ray shut down" if _shutdown_ray() else ""
        terminated = isinstance(cause, Terminated)
        print(f"farm {args.command}: {'terminated' if terminated else 'interrupted'}{ray_note}", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:  # `farm ... | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
