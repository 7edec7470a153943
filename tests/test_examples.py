"""Every tabular recipe under examples/ trains through the CLI (3 epochs) into an artifact.

The recipes are globbed, not listed; language-modeling recipes are covered elsewhere. The
training itself happens once per session in the ``trained_examples`` fixture (conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import EXAMPLES, GATE_FAILED, tabular_example_recipes

import tensorsmith

TABULAR = tabular_example_recipes()


def test_examples_are_found_by_glob() -> None:
    assert len(TABULAR) >= 3
    tasks = {yaml.safe_load(p.read_text())["task"] for p in TABULAR}
    assert tasks == {"regression", "classification"}


@pytest.mark.parametrize("recipe", TABULAR, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_trains_into_an_artifact(
    recipe: Path, trained_examples: dict[str, dict[str, Any]]
) -> None:
    entry = trained_examples[str(recipe.relative_to(EXAMPLES))]
    code, out, err = entry["result"]
    run = json.loads((entry["path"] / "run.json").read_text())
    gate_held = run["gate"] is None or run["gate"]["passed"]
    assert code == (0 if gate_held else GATE_FAILED), f"stdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err
    version: Path = entry["path"]
    assert str(version) in "".join(out.split())  # "saved PATH", however the console wrapped it
    for name in (
        "recipe.yaml",
        "model.safetensors",
        "preprocess.json",
        "metrics.json",
        "history.csv",
        "run.json",
        "card.md",
    ):
        assert (version / name).is_file(), name
    assert list((version / "plots").glob("*.png"))

    run = json.loads((version / "run.json").read_text())
    assert run["epochs"] <= 3
    assert run["task"] == yaml.safe_load(recipe.read_text())["task"]
    assert len(pd.read_csv(version / "history.csv")) == run["epochs"]
    metrics = json.loads((version / "metrics.json").read_text())
    assert "test" in metrics
    assert all(
        np.isfinite(v) for split in metrics.values() for v in split.values() if np.isscalar(v)
    )

    # the stored model loads and predicts on its own data
    model = tensorsmith.load(str(version))
    data = pd.read_csv(model.recipe.path(model.recipe.data.source)).head(20)
    preds = model.predict(data)
    assert len(preds) == 20
    assert f"{model.recipe.data.target}_predicted" in preds.columns
