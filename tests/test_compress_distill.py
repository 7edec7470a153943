"""Distillation (tensorsmith.compression.distill): the loss against a hand-written reference, a
tiny run that moves a student towards its teacher, and the students that are refused."""

from __future__ import annotations

import io
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import tiny
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

import tensorsmith
from tensorsmith.compression.distill import check_student, distill, distillation_loss, soft_loss
from tensorsmith.errors import RecipeError
from tensorsmith.models import build_model
from tensorsmith.recipe import parse_recipe
from tensorsmith.store.artifact import resolve
from tensorsmith.tasks import create_task
from tensorsmith.tasks.predictor import Predictor


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=300)


def _recipe(source: Path, **model: Any) -> dict[str, Any]:
    model = model or {"arch": "rnn", "hidden_size": 16, "pooling": "mean"}
    split = {"valid": 0.2, "test": 0.2, "seed": 0}
    return tiny.text_recipe(source, model, "tiny-teacher", 12, split=split)


def _student(source: Path, **changes: Any) -> Any:
    raw = _recipe(source, arch="rnn", embedding_dim=4, hidden_size=4, pooling="mean")
    raw["name"] = "tiny-student"
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            raw[section][field] = value
        else:
            raw[section] = value
    return parse_recipe(raw, base_dir=source.parent)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Predictor, Path]:
    folder = tmp_path_factory.mktemp("distill")
    source = tiny.texts_csv(folder / "texts.csv", n=80)
    store = folder / "store"
    tensorsmith.train(_recipe(source), store=store, console=_quiet())
    return Predictor.load(resolve("tiny-teacher", store)), source


# ----------------------------------------------------------------------------- the loss


def _ce(module: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return F.cross_entropy(module(*batch[:-1]), batch[-1])


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 0.5), (2.0, 0.3), (4.0, 1.0)])
def test_loss_equals_the_hand_written_reference(temperature: float, alpha: float) -> None:
    torch.manual_seed(0)
    student, teacher = nn.Linear(5, 3), nn.Linear(5, 3)
    x, y = torch.randn(7, 5), torch.randint(0, 3, (7,))
    got = distillation_loss(_ce, teacher, temperature, alpha)(student, (x, y))
    s, t = student(x), teacher(x)
    kl = F.kl_div(
        F.log_softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1),
        reduction="batchmean",
    )  # fmt: skip
    want = alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(s, y)
    torch.testing.assert_close(got, want)


def test_a_language_model_is_matched_token_by_token() -> None:
    torch.manual_seed(1)
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    per_token = [
        F.kl_div(F.log_softmax(s[b, i] / 2, -1), F.softmax(t[b, i] / 2, -1), reduction="sum")
        for b in range(2)
        for i in range(5)
    ]
    torch.testing.assert_close(soft_loss(s, t, 2.0), 4 * torch.stack(per_token).mean())


def test_one_output_or_values_are_matched_by_squared_error() -> None:
    s, t = torch.tensor([[0.5], [2.0], [-1.0]]), torch.tensor([[1.0], [0.0], [-1.0]])
    torch.testing.assert_close(soft_loss(s, t, 3.0), torch.tensor((0.25 + 4.0 + 0.0) / 3))
    s, t = torch.randn(4, 3), torch.randn(4, 3)  # a forecast of 3 steps: values, not logits
    torch.testing.assert_close(soft_loss(s, t, 3.0, logits=False), F.mse_loss(s, t))


def test_classes_and_tokens_are_logits_numbers_are_values(
    teacher: tuple[Predictor, Path],
) -> None:
    parent, source = teacher
    assert parent.task.scores_are_logits is True
    assert create_task(_student(source, task="text-regression")).scores_are_logits is False
    assert create_task(_lm(16)).scores_are_logits is True


def test_gradients_reach_the_student_only() -> None:
    student, teacher = nn.Linear(4, 3), nn.Linear(4, 3)
    batch = (torch.randn(6, 4), torch.randint(0, 3, (6,)))
    distillation_loss(_ce, teacher, 2.0, 0.5)(student, batch).backward()
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0
    assert teacher.weight.grad is None and not teacher.training


def test_alpha_zero_is_the_tasks_own_loss(teacher: tuple[Predictor, Path], tmp_path: Path) -> None:
    parent, source = teacher
    task = create_task(_student(source))
    task.inherit(parent.task)
    prepared = task.prepare(tmp_path / "cache", _quiet())
    module = build_model(task.recipe.model, prepared.dims)
    batch = next(iter(prepared.train.batches(0)))
    own = task.loss()(module, batch)
    torch.testing.assert_close(
        distillation_loss(task.loss(), parent.module, 2.0, 0.0)(module, batch), own
    )
    mixed = distillation_loss(task.loss(), parent.module, 2.0, 0.5)(module, batch)
    assert not torch.allclose(mixed, own)


# ----------------------------------------------------------------------------- a run


def _mean_kl(task: Any, student: nn.Module, teacher: nn.Module, split: Any) -> float:
    values = []
    with torch.no_grad():
        for batch in split.batches():
            values.append(float(soft_loss(student(*batch[:-1]), teacher(*batch[:-1]), 1.0)))
    return sum(values) / len(values)


def test_a_tiny_run_moves_the_student_towards_the_teacher(
    teacher: tuple[Predictor, Path], tmp_path: Path
) -> None:
    parent, source = teacher
    recipe = _student(source)
    child = distill(parent, recipe, _quiet(), tmp_path / "cache", temperature=2.0, alpha=1.0)
    # the student as the run started: the same seed builds the same weights
    task = create_task(child.recipe)
    task.inherit(parent.task)
    prepared = task.prepare(tmp_path / "cache", _quiet())
    torch.manual_seed(recipe.train.seed)
    start = build_model(child.recipe.model, prepared.dims).eval()
    test = prepared.splits["test"]
    before = _mean_kl(task, start, parent.module, test)
    after = _mean_kl(task, child.module.eval(), parent.module, test)
    assert after < 0.5 * before, (before, after)
    assert child.recipe.name == "tiny-teacher" and child.recipe.model.arch == "rnn"
    assert child.recipe.model.hidden_size == 4  # type: ignore[union-attr]
    assert child.dims == prepared.dims and child.history
    method = child.method["distill"]
    assert method["teacher"] == parent.name and method["temperature"] == 2.0
    assert method["alpha"] == 1.0
    n_student = sum(p.numel() for p in child.module.parameters())
    n_teacher = sum(p.numel() for p in parent.module.parameters())
    assert (method["student_parameters"], method["teacher_parameters"]) == (n_student, n_teacher)
    assert n_student < n_teacher


# ----------------------------------------------------------------------------- refused


def test_a_student_of_another_task_is_refused(teacher: tuple[Predictor, Path]) -> None:
    parent, source = teacher
    with pytest.raises(
        RecipeError, match=r"task is text-regression.*set task: text-classification"
    ):
        check_student(parent, _student(source, task="text-regression"))


def test_a_student_with_another_target_is_refused(teacher: tuple[Predictor, Path]) -> None:
    parent, source = teacher
    with pytest.raises(RecipeError, match=re.escape("data.target is 'grp', the teacher's is 'y'")):
        check_student(parent, _student(source, data__target="grp"))


def test_a_student_with_another_tokenizer_or_length_is_refused(
    teacher: tuple[Predictor, Path],
) -> None:
    parent, source = teacher
    other = {"kind": "wordpiece", "vocab_size": 60}
    with pytest.raises(
        RecipeError, match=re.escape("data.tokenizer.vocab_size is 60, the teacher's is 80")
    ):
        check_student(parent, _student(source, data__tokenizer=other))
    with pytest.raises(RecipeError, match=re.escape("data.max_length is 32, the teacher's is 16")):
        check_student(parent, _student(source, data__max_length=32))


def test_a_student_on_other_data_or_labels_is_refused(
    teacher: tuple[Predictor, Path], tmp_path: Path
) -> None:
    parent, source = teacher
    other = tiny.texts_csv(tmp_path / "texts.csv", n=40)  # the same name, other rows
    with pytest.raises(RecipeError, match=r"is not the data the teacher tiny-teacher@1 was"):
        distill(parent, _student(other), _quiet(), tmp_path / "cache")
    copy = tmp_path / "copy" / "texts.csv"  # the same bytes elsewhere are the teacher's data
    copy.parent.mkdir()
    copy.write_bytes(source.read_bytes())
    check_student(parent, _student(copy))


@pytest.mark.parametrize(("temperature", "alpha"), [(0.0, 0.5), (2.0, 1.5), (2.0, -0.1)])
def test_out_of_range_options_are_refused(
    teacher: tuple[Predictor, Path], tmp_path: Path, temperature: float, alpha: float
) -> None:
    parent, source = teacher
    with pytest.raises(RecipeError, match=r"--temperature|--alpha"):
        distill(parent, _student(source), _quiet(), tmp_path / "cache", temperature, alpha)


def _lm(block_size: int, vocab_size: int = 300) -> Any:
    return parse_recipe(
        {
            "name": "lm",
            "task": "language-modeling",
            "data": {
                "source": "/corpus/*.txt",
                "tokenizer": {"kind": "bpe", "vocab_size": vocab_size},
            },
            "model": {
                "arch": "gpt",
                "n_layer": 1,
                "n_head": 2,
                "n_embd": 16,
                "block_size": block_size,
            },
            "train": {"max_steps": 10, "batch_size": 4},
        }
    )


def test_a_language_model_student_must_fit_the_teachers_windows_and_tokenizer() -> None:
    parent = SimpleNamespace(recipe=_lm(32), name="lm@1", path=Path("/store/lm/1"))
    check_student(parent, _lm(16))  # type: ignore[arg-type]  # shorter windows are fine
    with pytest.raises(RecipeError, match=r"block_size is 64 .* at most 32 tokens"):
        check_student(parent, _lm(64))  # type: ignore[arg-type]
    with pytest.raises(
        RecipeError, match=re.escape("data.tokenizer.vocab_size is 500, the teacher's is 300")
    ):
        check_student(parent, _lm(32, vocab_size=500))  # type: ignore[arg-type]


POEMS = Path(__file__).parent / "data" / "shakespeare"


def _poems(folder: Path, name: str, n_embd: int, block_size: int, steps: int) -> Any:
    return parse_recipe(
        {
            "name": name,
            "task": "language-modeling",
            "data": {"source": str(POEMS / "*.txt"), "tokenizer": {"kind": "char"}},
            "model": {
                "arch": "gpt", "n_layer": 1, "n_head": 2, "n_embd": n_embd,
                "block_size": block_size, "dropout": 0.0,
            },
            "train": {"max_steps": steps, "batch_size": 8, "eval_every": steps, "eval_batches": 2},
            "evaluate": {"samples": 0, "plots": False},
        },
        base_dir=folder,
    )  # fmt: skip


def test_a_language_model_distils_on_the_teachers_corpus(tmp_path: Path) -> None:
    store = tmp_path / "store"
    tensorsmith.train(_poems(tmp_path, "poems", 32, 32, 60), store=store, console=_quiet())
    parent = Predictor.load(resolve("poems", store))
    student = _poems(tmp_path, "poems-student", 8, 16, 30)
    child = distill(parent, student, _quiet(), tmp_path / "cache", temperature=1.0, alpha=1.0)
    task = create_task(child.recipe)
    task.inherit(parent.task)
    prepared = task.prepare(tmp_path / "cache", _quiet())
    assert child.dims == prepared.dims == {"vocab_size": parent.task.tokenizer.vocab_size}
    torch.manual_seed(student.train.seed)
    start = build_model(child.recipe.model, prepared.dims).eval()
    valid = prepared.splits["valid"]
    before = _mean_kl(task, start, parent.module, valid)
    after = _mean_kl(task, child.module.eval(), parent.module, valid)
    assert after < before, (before, after)
    assert child.recipe.name == "poems" and child.recipe.model.n_embd == 8  # type: ignore[union-attr]
