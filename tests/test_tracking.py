"""MLflow helpers that must not leak global state between runs in one process."""
from __future__ import annotations

import os

from farm.tracking import scoped_uri


def test_scoped_uri_restores_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///before.db")
    with scoped_uri(f"sqlite:///{tmp_path}/inside.db"):
        assert os.environ["MLFLOW_TRACKING_URI"].endswith("inside.db")
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///before.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with scoped_uri(f"sqlite:///{tmp_path}/inside.db"):
        pass
    assert "MLFLOW_TRACKING_URI" not in os.environ
