"""Image classification: the folder, CSV and .npz sources, bad input, predict, init, resume, and
the digits example on small settings.

Every image here is a real PNG (or an .npz) written into the test's tmp dir with Pillow.
"""

from __future__ import annotations

import copy
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tiny
import torch
import yaml
from conftest import EXAMPLES, run_cli
from PIL import Image
from rich.console import Console

import tensorsmith
from tensorsmith import DataError
from tensorsmith.data.text import DataWarning
from tensorsmith.recipe import parse_recipe
from tensorsmith.tasks import create_task
from tensorsmith.training.run import train_module

DIGITS = EXAMPLES / "digits_cnn" / "recipe.yaml"


def _recipe(source: Path, **data: Any) -> dict[str, Any]:
    return {
        "name": "tiny-images",
        "task": "image-classification",
        "data": {"source": str(source), "split": {"valid": 0.25, "test": 0.25}, **data},
        "model": {"arch": "cnn", "channels": [4], "head": []},
        "train": {"epochs": 2, "batch_size": 4},
        "evaluate": {"plots": False},
    }


def _train(recipe: Any, store: Path, overrides: list[str] | None = None) -> tuple[Any, str]:
    out = io.StringIO()
    model = tensorsmith.train(recipe, overrides, store=store, console=Console(file=out, width=300))
    return model, out.getvalue()


# ----------------------------------------------------------------------------- bad input


def test_folder_with_one_class_is_an_error(tmp_path: Path) -> None:
    folder = tiny.image_folder(tmp_path / "images", classes=("cats",))
    with pytest.raises(DataError, match=r"1 class sub-folder with images \(cats\).*two classes"):
        _train(_recipe(folder), tmp_path / "store")


def test_non_images_and_damaged_images_are_skipped_and_named(tmp_path: Path) -> None:
    folder = tiny.image_folder(tmp_path / "images", per_class=10)
    (folder / "bar" / "notes.txt").write_text("not an image", encoding="utf-8")
    (folder / "dot" / "broken.png").write_bytes(os.urandom(300))
    good = (folder / "bar" / "0.png").read_bytes()
    (folder / "dot" / "truncated.png").write_bytes(good[: len(good) // 2])
    with pytest.warns(DataWarning) as caught:
        model, out = _train(_recipe(folder), tmp_path / "store")
    said = " ".join(str(w.message) for w in caught) + out
    for name in ("bar/notes.txt", "dot/broken.png", "dot/truncated.png"):
        assert name in said, name
    sizes = model.run["images"]
    assert sum(sizes.values()) == 20  # the 20 good images, none of the three bad files


def test_nothing_readable_is_an_error(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "images" / name / f"{i}.png").write_bytes(os.urandom(100))
    with pytest.raises(DataError, match="no readable images") as info:
        _train(_recipe(tmp_path / "images"), tmp_path / "store")
    assert ".png (not an image Pillow can read)" in str(info.value)


def test_mixed_sizes_and_modes_are_resized_and_converted(tmp_path: Path) -> None:
    folder = tiny.image_folder(tmp_path / "images", per_class=8, size=6)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (9, 11, 3), dtype=np.uint8)).save(folder / "bar" / "c.png")
    Image.fromarray(rng.integers(0, 255, (6, 6, 4), dtype=np.uint8)).save(folder / "dot" / "d.png")
    Image.fromarray(rng.integers(0, 255, (6, 6), dtype=np.uint8)).convert("P").save(
        folder / "dot" / "p.bmp"
    )
    recipe = _recipe(folder, split={"valid": 0.2, "test": 0.0, "seed": 1})
    model, out = _train(recipe, tmp_path / "store")
    flat = " ".join(out.split())
    assert "resized to 6×6" in flat and "converted to RGB" in flat
    assert model.config["dims"] == {"channels": 3, "height": 6, "width": 6, "n_outputs": 2}
    assert model.run["images"]["train"] + model.run["images"]["valid"] == 19


def test_npz_without_x_or_y_names_what_it_has(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, 5, 5)), labels=np.arange(4))
    with pytest.raises(DataError, match=r"arrays images, labels, without x and y"):
        _train(_recipe(tmp_path / "bad.npz"), tmp_path / "store")


def test_npz_trains_in_process_and_predicts_from_references(tmp_path: Path) -> None:
    source = tiny.image_npz(tmp_path / "shapes.npz", n=32)
    recipe = parse_recipe(_recipe(source))
    task = create_task(recipe)
    prepared = task.prepare(tmp_path / "cache", Console(file=io.StringIO()))
    assert prepared.train.workers == 0  # arrays in memory: no decoding processes
    model, _ = _train(_recipe(source), tmp_path / "store")
    refs = pd.DataFrame({"path": [f"{source}#{i}" for i in range(6)]})
    predicted = model.predict(refs)
    assert list(predicted["label_predicted"].astype(str)) != [] and len(predicted) == 6
    assert set(predicted["label_predicted"]) <= {"0", "1"}


def test_normalisation_is_fitted_on_the_train_split_only(tmp_path: Path) -> None:
    folder = tiny.image_folder(tmp_path / "images", per_class=10)
    model, _ = _train(_recipe(folder), tmp_path / "store")
    train = model.data_splits()["train"]
    pixels = np.stack([np.asarray(Image.open(p), dtype=np.float64) / 255 for p in train["path"]])
    state = json.loads((Path(model.path) / "preprocess.json").read_text())
    assert state["mean"] == pytest.approx([pixels.mean()], rel=1e-6)
    assert state["std"] == pytest.approx([pixels.std()], rel=1e-5)
    everything = np.stack(
        [np.asarray(Image.open(p), dtype=np.float64) / 255 for p in folder.glob("*/*.png")]
    )
    assert state["mean"][0] != pytest.approx(everything.mean(), rel=1e-6)


# ----------------------------------------------------------------------------- predict and init


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("images")
    folder = tiny.image_folder(base / "images", per_class=10, size=6)
    _train(_recipe(folder), base / "store", ["train.epochs=25", "train.optimizer.lr=0.02"])
    return {"base": base, "images": folder, "store": base / "store"}


def test_predict_a_file_a_folder_and_a_csv_of_paths(trained: dict[str, Path]) -> None:
    base, images, store = trained["base"], trained["images"], trained["store"]
    one = images / "bar" / "1.png"
    code, out, err = run_cli("predict", "tiny-images", "--data", one, store=store)
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    assert list(table["path"]) == [str(one.resolve())] and "label_predicted" in table
    assert {"proba_bar", "proba_dot"} <= set(table.columns)

    folder = tensorsmith.predict("tiny-images", images, store=store)
    assert len(folder) == 20 and folder["path"].str.endswith(".png").all()
    # the model learned bars vs dots: its own training images come back right
    truth = folder["path"].map(lambda p: Path(p).parent.name)
    assert (folder["label_predicted"] == truth).mean() >= 0.75

    listing = base / "to_predict.csv"  # paths relative to the CSV's folder; one is missing
    paths = ["images/bar/2.png", "images/dot/3.png", "images/dot/missing.png"]
    pd.DataFrame({"path": paths}).to_csv(listing, index=False)
    table = tensorsmith.predict("tiny-images", listing, store=store)
    assert any("dot/missing.png (file not found)" in note for note in table.attrs["notes"])
    assert len(table) == 3 and table["label_predicted"].isna().tolist() == [False, False, True]

    # evaluate: the model's own valid/test splits, and a labelled folder given as --data
    own = tensorsmith.evaluate("tiny-images", store=store)
    assert set(own) == {"valid", "test"} and 0.0 <= own["test"]["accuracy"] <= 1.0
    scores = tensorsmith.evaluate("tiny-images", data=images, store=store)["images"]
    assert 0.0 <= scores["accuracy"] <= 1.0
    assert sum(map(sum, scores["confusion_matrix"])) == 20  # every image of the folder


def test_predict_an_image_of_another_size_resizes_it(trained: dict[str, Path]) -> None:
    other = trained["base"] / "big.png"
    big = np.zeros((24, 24), dtype=np.uint8)
    big[:, 10:14] = 220  # a vertical bar, drawn at 4× the size
    Image.fromarray(big).convert("RGB").save(other)
    code, out, err = run_cli("predict", "tiny-images", "--data", other, store=trained["store"])
    assert code == 0, err
    assert "24×24 were resized to 6×6" in " ".join(err.split())
    assert len(pd.read_csv(io.StringIO(out))) == 1


def test_init_recognises_an_image_folder(trained: dict[str, Path], tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    code, _out, err = run_cli("init", trained["images"], "--out", recipe, cwd=tmp_path)
    assert code == 0, err
    raw = yaml.safe_load(recipe.read_text())
    assert raw["task"] == "image-classification" and raw["model"]["arch"] == "cnn"
    assert raw["data"]["image"]["size"] == [6, 6]
    model, _ = _train(recipe, tmp_path / "store", ["train.epochs=1", "evaluate.plots=false"])
    assert model.task.name == "image-classification"


# ----------------------------------------------------------------------------- resume


def test_resume_with_augmentation_in_workers_is_exact(tmp_path: Path) -> None:
    folder = tiny.image_folder(tmp_path / "images", per_class=12)
    recipe = _recipe(
        folder,
        workers=1,
        augment={"crop_padding": 1, "flip": True, "rotation": 10, "translate": 0.1},
    )
    recipe["model"]["dropout"] = 0.3
    recipe["train"].update({"epochs": 4, "checkpoint_every": 2})
    quiet = Console(file=io.StringIO())

    def run(resume: Any, saved: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        task = create_task(parse_recipe(recipe))
        prepared = task.prepare(tmp_path / "cache", quiet)
        assert prepared.train.workers == 1
        trained = train_module(
            task, prepared, None, quiet, tmp_path / "cache", resume,
            lambda state: saved.append(copy.deepcopy(state)),
        )  # fmt: skip
        return trained.module.state_dict()

    checkpoints: list[dict[str, Any]] = []
    full = run(None, checkpoints)
    assert [c["extra"]["epoch"] for c in checkpoints] == [2, 4]
    resumed = run(lambda template: checkpoints[0], [])  # in place of the checkpoint's files
    assert all(torch.equal(full[k], resumed[k]) for k in full)


# ----------------------------------------------------------------------------- the example


def test_digits_example_on_small_settings(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model, _ = _train(DIGITS, store, ["train.epochs=1"])
    version = Path(model.path)
    metrics = json.loads((version / "metrics.json").read_text())
    assert 0.1 < metrics["test"]["accuracy"] <= 1.0
    assert {"image_grid.png", "confusion_matrix.png"} <= {
        p.name for p in (version / "plots").iterdir()
    }
    run = json.loads((version / "run.json").read_text())
    assert sum(run["images"].values()) == 1797
    threes = EXAMPLES / "digits_cnn" / "images" / "3"
    predicted = tensorsmith.predict("digits-cnn", threes, store=store)
    assert len(predicted) == len(list(threes.iterdir()))
