"""`farm tables`: golden outputs on a committed fixture run, missing data, heat maps, MLflow.

The fixture (tests/fixtures/tables_run, built by tests/fixtures/make_tables_fixture.py) is a
finished, aligned tiny run whose trigger blobs were emptied to keep it small. Update the
golden files after an intended change with

    FARM_UPDATE_GOLDEN=1 PYTHONPATH=. python -m pytest tests/test_tables.py -k golden
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from farm.report import tables as T
from farm.report.plots import heatmap, heatmap_figure
from farm.report.render import cell

FIXTURES = Path(__file__).parent / "fixtures"
RUN = FIXTURES / "tables_run"
GOLDEN = FIXTURES / "tables_golden"
UPDATE = os.environ.get("FARM_UPDATE_GOLDEN") == "1"
# Figures checked pixel-for-pixel (hashes): a representative subset, to keep the test fast.
FIGURE_JOBS = [("badnets", "ours", "plain"), ("badnets", "nc", "plain")]


@pytest.fixture(scope="module")
def data() -> T.RunData:
    return T.load(str(RUN), "fixture", log_fn=lambda _m: None, align=False)


def _check_golden(files: dict[str, bytes]) -> None:
    if UPDATE:
        for old in GOLDEN.glob("*"):
            old.unlink()
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for rel, content in files.items():
            (GOLDEN / rel).write_bytes(content)
        return
    expected = {p.name for p in GOLDEN.iterdir()}
    assert set(files) == expected
    for rel, content in files.items():
        assert content == (GOLDEN / rel).read_bytes(), f"{rel} differs from its golden file"


def test_golden_tables_and_figures(data, tmp_path):
    tables = T.build_tables(data)
    assert [t.name for t in tables] == ["coverage", "fig8_speedup", "table4_methods", "table5_robustness",
                                        "table6_ablation", "scan_anomaly", "fig9_13_align_size",
                                        "fig10_14_align_asr", "table9_pairs"]
    sub = T.RunData(**{**data.__dict__,
                       "df": data.df[data.df[["model_id", "method", "variant"]].apply(tuple, axis=1).isin(FIGURE_JOBS)],
                       "align": data.align[(data.align.model_id == "badnets") & (data.align.method == "nc")
                                           & (data.align.variant == "plain")]})
    figs = T.figures(sub)
    assert len(figs) == 2 * 2 + 3
    T.write(tables, figs, tmp_path, list(T.FORMATS))
    files = {p.name: p.read_bytes() for p in sorted(tmp_path.iterdir()) if p.is_file()}
    files["figures.sha256"] = "".join(f"{hashlib.sha256(png).hexdigest()}  {rel}\n"
                                      for rel, png in figs.items()).encode()
    _check_golden(files)


def test_outputs_are_deterministic(data, tmp_path):
    t1 = T.build_tables(data)
    t2 = T.build_tables(T.load(str(RUN), "fixture", log_fn=lambda _m: None, align=False))
    assert [t.name for t in t1] == [t.name for t in t2] and len(t1) >= 8  # zip below compares every table
    for a, b in zip(t1, t2):
        assert T.to_markdown(a) == T.to_markdown(b) and T.to_tex(a) == T.to_tex(b)
    mat = np.arange(16, dtype=float).reshape(4, 4)
    assert heatmap(mat, "t", list("abcd"), "x") == heatmap(mat, "t", list("abcd"), "x")


def test_tables_carry_paper_reference_and_values(data):
    by = {t.name: t for t in T.build_tables(data)}
    t4 = by["table4_methods"]
    assert "Paper reference" in T.to_markdown(t4) and t4.reference is not None
    assert set(t4.reference["method"]) == {"uap", "nc", "ours"}
    row = t4.frame[(t4.frame.model == "clean") & (t4.frame.method == "ours") & (t4.frame.variant == "plain")].iloc[0]
    ok = data.df[(data.df.model_id == "clean") & (data.df.method == "ours") & (data.df.variant == "plain")
                 & (data.df.victim >= 0)]
    assert row["pairs"] == "20/20"
    assert row["asr_pct"] == pytest.approx(100 * ok["asr"].mean())
    t5 = by["table5_robustness"].frame.iloc[0]
    cols = ["normal", "r98", "r96", "r88", "r80", "rot1", "rot2", "rot3", "rot4", "rot5"]
    assert t5["avg"] == pytest.approx(np.mean([t5[c] for c in cols]))
    ablations = by["table6_ablation"].frame
    assert set(ablations.method) == {"ours", "ours_no_tanh", "ours_single_positive", "ours_single_variable",
                                     "ours_no_tanh_single"} == set(T.ablations())
    assert len(by["fig9_13_align_size"].frame) == len(data.align.groupby(["model_id", "method", "variant"]))


def test_missing_method_and_pairs_are_reported(data):
    df = data.df
    job = (df.model_id == "clean") & (df.method == "ours") & (df.variant == "plain")
    df = df[~(job & (df.victim == 1) & (df.target == 2)) & (df.method != "nc")].copy()  # a lost pair, no NC
    df.loc[job & (df.victim == 3) & (df.target == 4), "status"] = "failed"  # a failed pair
    broken = T.RunData(**{**data.__dict__, "df": df})
    by = {t.name: t for t in T.build_tables(broken)}
    t4 = by["table4_methods"]
    row = t4.frame[(t4.frame.model == "clean") & (t4.frame.method == "ours") & (t4.frame.variant == "plain")].iloc[0]
    assert row["pairs"] == "18/20"
    notes = " ".join(t4.notes)
    assert "nc" in notes.split("missing methods (no rows in this run): ")[1].split(";")[0]
    assert "clean/ours/plain: 2 of 20 pairs missing or failed (1->2, 3->4)" in notes
    cov = by["coverage"].frame
    nc = cov[(cov.method == "nc") & (cov.model == "clean") & (cov.variant == "plain")].iloc[0]
    assert nc["pairs_ok"] == 0 and nc["missing"].endswith("(20 in all)")
    assert "1->2" in cov[(cov.method == "ours") & (cov.model == "clean") & (cov.variant == "plain")].iloc[0]["missing"]
    none = T.RunData(**{**data.__dict__, "align": None, "align_note": "alignment maps missing: models gone"})
    assert "alignment maps missing: models gone" in by_name(none, "fig9_13_align_size").notes


def test_capped_pairs_are_shown_apart_and_named(data):
    """CW rows stopped by max_rounds (stop_reason 'cap') never enter an average: Table 4 counts
    them in capped columns, every mean covers the other pairs, and the notes name the cap."""
    df = data.df.copy()
    job = (df.model_id == "badnets") & (df.method == "nc") & (df.variant == "plain")
    df.loc[job, "method"] = "cw"
    df.loc[job, "params_json"] = '{"asr_threshold": 0.9, "max_iterations": 20, "max_rounds": 10}'
    cap = job & df.victim.isin([1, 2])  # 8 of the 20 pairs
    df.loc[cap, ["stop_reason", "trigger_size", "raw_size", "asr", "wall_s"]] = ["cap", 934.0, 934.0, 0.5, 99.0]
    capped = T.RunData(**{**data.__dict__, "df": df, "methods": data.methods + [("cw", "plain")]})
    by = {t.name: t for t in T.build_tables(capped)}
    t4 = by["table4_methods"].frame
    row = t4[(t4.model == "badnets") & (t4.method == "cw")].iloc[0]
    free = df[job & ~cap & (df.victim >= 0)]
    assert row["pairs"] == "12/20" and row["capped"] == 8 and row["converged"] == 12
    assert row["pixels_mean"] == pytest.approx(free["trigger_size"].mean())
    assert row["asr_pct"] == pytest.approx(100 * free["asr"].mean())
    assert row["s_per_pair"] == pytest.approx(free["wall_s"].mean())  # the capped 99 s left out, not averaged in
    assert row["capped_pixels_mean"] == 934 and row["capped_asr_pct"] == 50
    for name in ("table4_methods", "fig8_speedup", "coverage"):
        notes = " ".join(by[name].notes)
        assert "badnets/cw/plain: 8 of 20 pairs stopped by a cap (max_rounds=10)" in notes, name
        assert "max_iterations=20 (1000)" in notes and "cw 90%" in notes, name
    cov = by["coverage"].frame
    assert cov[(cov.model == "badnets") & (cov.method == "cw")].iloc[0]["stop_cap"] == 8
    fig8 = by["fig8_speedup"].frame
    assert fig8[(fig8.model == "badnets") & (fig8.variant == "plain")]["cw_capped"].item() == 8


def by_name(data: T.RunData, name: str) -> T.Table:
    return {t.name: t for t in T.build_tables(data)}[name]


def test_heatmap_has_kxk_cells_with_masked_diagonal():
    k = 5
    mat = np.arange(k * k, dtype=float).reshape(k, k)
    mat[1, 3] = np.nan  # a missing pair
    fig = heatmap_figure(mat, "t", [f"c{i}" for i in range(k)], "px")
    try:
        arr = fig.axes[0].images[0].get_array()
        assert arr.shape == (k, k)
        assert np.array_equal(np.ma.getmaskarray(arr), np.eye(k, dtype=bool) | np.isnan(mat))
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [f"c{i}" for i in range(k)]
        assert len(fig.axes) == 2  # the colour bar
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_cell_formatting_is_explicit():
    assert [cell(v) for v in (float("nan"), None, 3.0, 0.123456, 50173.2, True, 7, float("inf"))] == \
        ["n/a", "n/a", "3", "0.1235", "50173", "yes", "7", "inf"]


def test_pair_table_for_sampled_pairs(data):
    df = data.df[(data.df.model_id == "clean") & (data.df.victim >= 0)]
    df = df[((df.victim == 1) & (df.target == 2)) | ((df.victim == 4) & (df.target == 0))]
    sampled = T.RunData(**{**data.__dict__, "df": df, "sampled": True,
                           "expected": {"clean": [(1, 2), (4, 0)], "badnets": []}})
    t9 = by_name(sampled, "table9_pairs")
    assert list(t9.frame["pair"]) == ["c1->c2", "c4->c0"]
    r = df[(df.method == "nc") & (df.variant == "plain") & (df.victim == 1)].iloc[0]
    assert t9.frame.iloc[0]["nc px"] == r["trigger_size"] and t9.frame.iloc[0]["nc asr%"] == pytest.approx(100 * r["asr"])
    assert "not applicable" in " ".join(by_name(data, "table9_pairs").notes)


@pytest.mark.slow
def test_farm_run_then_tables_logs_to_mlflow(tmp_path, local_ray):
    """farm run, then farm tables --align (aligns on Ray, the models being here) into sqlite MLflow;
    both on the session's local Ray (the CLI reuses an initialised Ray: a Ray start is ~10 s)."""
    import mlflow

    from e2e_util import tiny_config, write_config
    from farm.cli import main
    from farm.tracking import run_artifact_dir

    cfg = tiny_config(tmp_path)
    cfg["run"]["id"] = "e2e-tables"
    cfg["models"] = cfg["models"][1:]
    cfg["methods"] = [{"name": "ours", "params": {"epochs": 2}}, {"name": "nc", "params": {"epochs": 2}}]
    cfg["pairs"] = {"mode": "sample", "sample": 4, "victim_images": 8, "batch_size": 8, "heldout_images": 6}
    path = write_config(tmp_path / "c.yaml", cfg)
    assert main(["run", str(path)]) == 0
    out = tmp_path / "tables"
    assert main(["tables", "e2e-tables", "--output", str(tmp_path), "--out", str(out), "--format", "md,csv,tex",
                 "--align"]) == 0
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert main(["tables", "e2e-tables", "--output", str(tmp_path), "--out", str(tmp_path / "t2"),
                 "--tracking-uri", other]) == 0
    assert (tmp_path / "e2e-tables" / "align").is_dir()
    t9 = pd.read_csv(out / "table9_pairs.csv")
    assert len(t9) == 4 and "ours px" in t9.columns
    aligned = pd.read_csv(out / "fig9_13_align_size.csv")
    assert list(aligned["other"]) == ["nc"] and aligned["pairs"].iloc[0] == 4
    for uri in (f"sqlite:///{tmp_path / 'mlflow.db'}", other):
        mlflow.set_tracking_uri(uri)
        runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`farm.run_id` = 'e2e-tables'",
                                  output_format="list")
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1
        # The store's own artifact folder (MLflow's client reads mlflow-artifacts: URIs through a server).
        folder = run_artifact_dir(uri, parents[0].info.artifact_uri) / "paper_tables"
        assert {"table4_methods.md", "table4_methods.json", "figures", "index.md"} <= {p.name for p in folder.iterdir()}
        assert (folder / "figures" / "poisoned" / "align-nc-plain-k_star.png").is_file()


def test_best_size_curve_is_median_of_step_functions():
    from farm.report.tables import best_size_curve

    g = pd.DataFrame({"trace_t": [[1.0, 3.0], [2.0], []], "trace_size": [[50.0, 10.0], [30.0], []]})
    curve = best_size_curve(g, np.array([0.5, 1.5, 2.5, 3.5]))
    # t=0.5: nobody has a trigger; t=1.5: only 1 of 3 (< half); t=2.5: 50, 30 -> 40; t=3.5: 10, 30 -> 20
    assert np.isnan(curve[0]) and np.isnan(curve[1])
    assert curve[2] == 40.0 and curve[3] == 20.0


def test_aligned_ok_drops_pairs_whose_reference_or_own_trigger_was_capped():
    """A capped trigger is the cap's: its alignment (as either side) says nothing. Regression:
    a capped reference row used to raise NameError here."""
    from types import SimpleNamespace

    from farm.report.tables import aligned_ok

    def row(method, victim, target, reason):
        return {"model_id": "m", "method": method, "variant": "plain", "victim": victim, "target": target,
                "status": "ok", "stop_reason": reason}

    df = pd.DataFrame([row("ours", 0, 1, "cap"), row("ours", 1, 0, "converged"), row("ours", 2, 0, "converged"),
                       row("nc", 0, 1, "converged"), row("nc", 1, 0, "converged"), row("nc", 2, 0, "cap")])
    align = pd.DataFrame([{**row("nc", v, t, ""), "status": "ok"} for v, t in ((0, 1), (1, 0), (2, 0))])
    kept = aligned_ok(SimpleNamespace(df=df, align=align))
    assert list(zip(kept["victim"], kept["target"])) == [(1, 0)]


def test_tables_label_methods_by_their_display_name(monkeypatch):
    from dataclasses import replace

    from farm.methods import METHODS
    from farm.report.tables import display

    monkeypatch.setattr(METHODS["nc"], "info", replace(METHODS["nc"].info, display="Neural Cleanse"))
    assert display("nc") == "Neural Cleanse"
    assert display("ours") == "ours" and display("retired_method") == "retired_method"


def test_run_settings_notes_name_shortened_budgets_and_an_opt_in_early_stop():
    """A table made from a run with ours' early stop on says so, as it says for short budgets."""
    import json

    from farm.methods.pixel import PixelParams

    params = {"ours": {"epochs": 150, "early_stop_epochs": 50}, "nc": {"epochs": 1000}}
    df = pd.DataFrame({"method": list(params), "params_json": [json.dumps(p) for p in params.values()]})
    notes = T.run_settings_notes(df)
    assert any("early stop" in n and "ours: early_stop_epochs=50" in n and "nc" not in n for n in notes), notes
    assert any("ours: epochs=150 (1000)" in n for n in notes), notes
    default = json.dumps({"early_stop_epochs": PixelParams().early_stop_epochs})
    plain = pd.DataFrame({"method": ["ours"], "params_json": [default]})
    assert not any("early stop" in n for n in T.run_settings_notes(plain))
