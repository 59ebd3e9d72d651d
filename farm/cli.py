"""The ``farm`` command. User errors print one clear message and exit 2, never a traceback.

Heavy dependencies (Ray, MLflow) are imported by the subcommands that need them, so
``farm validate`` is instant and ``farm bench`` runs on machines without Ray or MLflow.
"""
from __future__ import annotations

import argparse
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
    cfg = _config(args)
    from farm.grid import jobs

    print(f"{args.config or DEFAULT_CONFIG}: valid (config hash {cfg.hash()})")
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
    if args.address:
        cfg = replace(cfg, cluster=replace(cfg.cluster, address=args.address))
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


def cmd_zoo(args: argparse.Namespace) -> int:
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
              f"clean_acc={_fmt(acc)} asr={_fmt(asr)}")
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def cmd_tables(args: argparse.Namespace) -> int:
    from farm.report.tables import regenerate
    from farm.store import RunStore

    store = RunStore(args.output, args.run_id)
    if store.exists() and store.manifest().get("kind") == "scan":  # a `farm scan` run: Table 8
        from farm.scan.report import write_scan_tables

        print(f"tables written to {write_scan_tables(store, args.out, log_mlflow=not args.no_mlflow)}")
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
    store = execute(cfg, Path(args.config).read_text())
    out = write_scan_tables(store, log_mlflow=not args.no_mlflow)
    print(f"scan {cfg.run_id}: rows in {store.run_dir}/scan, Table 8 analogue in {out}")
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    from farm.align import align_run

    out = align_run(args.run_id, output=args.output, ref=args.ref, address=args.address, trust_code=args.trust_code)
    print(f"alignment written to {out}")
    return 0


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cmd_ui(args: argparse.Namespace) -> int:
    import shutil
    import socket

    if args.host not in LOOPBACK and not args.expose:
        raise ConfigError([f"--host {args.host}: the MLflow UI has no login; anyone who reaches {args.host}:{args.port} "
                           "reads (and can delete) every run. Keep 127.0.0.1 (use an SSH tunnel), or add --expose "
                           "if that network is trusted"])
    if not 1 <= args.port <= 65535:
        raise ConfigError([f"--port {args.port}: must be in 1..65535"])
    try:
        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as s:
            s.bind((args.host, args.port))
    except OSError as exc:
        raise ConfigError([f"--port {args.port}: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
                           "the port is taken or the address is not this machine's. Pass another --port"]) from None
    uri = args.tracking_uri or f"sqlite:///{Path(args.output).resolve() / 'mlflow.db'}"
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    cmd = [exe, "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    print(f"MLflow UI on http://{args.host}:{args.port} (store {uri}); Ctrl-C to stop")
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    os.execv(cmd[0], cmd)
    return 0  # pragma: no cover - execv does not return


def cmd_bench(args: argparse.Namespace) -> int:
    from farm.bench import bench

    cfg = _config(args)
    try:
        sizes: list[int | str] = [x if x == "auto" else int(x) for x in args.pairs_per_batch.split(",")]
    except ValueError:
        raise ConfigError([f"--pairs-per-batch: expected a comma list of integers or 'auto', "
                           f"got {args.pairs_per_batch!r}"]) from None
    models = args.model.split(",") if args.model else None
    bench(cfg, model_ids=models, methods=args.method.split(","), batch_sizes=sizes, pairs=args.pairs,
          epochs=args.epochs, device=args.device, out=args.out, baseline=args.baseline,
          baseline_pairs=args.baseline_pairs, rounds=args.rounds)
    return 0


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
    p = argparse.ArgumentParser(prog="farm", description="Ray-distributed benchmark farm for backdoor "
                                "trigger inversion: every pair, every model, every method.")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("config", nargs="?", help=f"YAML config (default: {DEFAULT_CONFIG.name})")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config field, e.g. --set methods.0.params.epochs=50 (repeatable)")

    sp = sub.add_parser("run", help="run a benchmark: zoo, all pairs through Ray, Parquet, MLflow")
    with_config(sp)
    sp.add_argument("--resume", metavar="RUN_ID", help="continue a run: only the pairs it has not stored run "
                    "(without CONFIG: the run's own config; --set run.output=ROOT says where it lives)")
    sp.add_argument("--address", help="Ray address ('auto' joins a running cluster); overrides cluster.address")
    sp.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("validate", help="check a config and list every problem at once")
    with_config(sp)
    sp.set_defaults(func=cmd_validate)

    sp = sub.add_parser("zoo", help="train (or reuse) the config's zoo models and print their accuracy/ASR")
    with_config(sp)
    sp.add_argument("--address", help="Ray address: train missing models as tasks there ('auto': running cluster)")
    sp.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    sp.set_defaults(func=cmd_zoo)

    sp = sub.add_parser("tables", help="regenerate tables and heat maps of a run from its Parquet files")
    sp.add_argument("run_id")
    sp.add_argument("--output", default="results", help="results root the run lives under: a folder or a URI "
                    "such as s3://bucket/prefix (default: results)")
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
    sp.set_defaults(func=cmd_scan)

    sp = sub.add_parser("align", help="align every method's stored triggers with ours (by size, by ASR) on Ray")
    sp.add_argument("run_id")
    sp.add_argument("--output", default="results", help="results root the run lives under (default: results)")
    sp.add_argument("--ref", default="ours", help="reference method (default: ours)")
    sp.add_argument("--address", help="Ray address ('auto' joins a running cluster)")
    sp.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    sp.set_defaults(func=cmd_align)

    sp = sub.add_parser("ui", help="serve the MLflow UI for a results folder on 127.0.0.1")
    sp.add_argument("--output", default="results")
    sp.add_argument("--tracking-uri")
    sp.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: local only; any other "
                    "address needs --expose)")
    sp.add_argument("--expose", action="store_true",
                    help="allow a non-loopback --host: the MLflow UI has no authentication (docs/security.md)")
    sp.add_argument("--port", type=int, default=5000)
    sp.add_argument("--dry-run", action="store_true", help="print the command instead of starting it")
    sp.set_defaults(func=cmd_ui)

    sp = sub.add_parser("bench", help="time one method over pairs in-process (no Ray) for several batch sizes P")
    with_config(sp)
    sp.add_argument("--model", help="model id, or a comma list (default: the config's first)")
    sp.add_argument("--method", default="ours", help="method, or a comma list (default: ours)")
    sp.add_argument("--pairs-per-batch", default="1,10,45,90",
                    help="comma list of P to time; 'auto' adds the P the autotuner picks")
    sp.add_argument("--pairs", type=int, default=90, help="pairs timed per P (default 90)")
    sp.add_argument("--epochs", type=int, default=5, help="epochs per timing (default 5)")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--out", help="also write the timings as CSV here")
    sp.add_argument("--baseline", action="store_true",
                    help="also time a paper-style one-pair loop (torch.optim.Adam, no batching) and print "
                         "each configuration's speed as a multiple of it (ours and nc only)")
    sp.add_argument("--baseline-pairs", type=int, default=4, help="pairs the baseline times per round (default 4)")
    sp.add_argument("--rounds", type=int, default=1,
                    help="repeat baseline and every P this many times, interleaved; medians reported (default 1)")
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


def _shutdown_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        _shutdown_ray()
        terminated = isinstance(cause, Terminated)
        print(f"farm {args.command}: {'terminated' if terminated else 'interrupted'}; Ray shut down", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:  # `farm ... | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
