"""Distillation: a smaller student trained through the one trainer to match a stored teacher.

The student's task inherits the teacher's fitted state (its preprocessing, tokenizer), so the
student reads the teacher's inputs; it trains on the teacher's data with

    alpha · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 − alpha) · task loss

(Hinton et al., 2015), or, for a model with one output (regression, binary logits), the mean
squared difference to the teacher's output in place of the KL term. A language model's (B, T, V)
logits are matched token by token. The teacher runs in eval mode without gradients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from tensorsmith.compression.child import Child
from tensorsmith.compression.measure import parameter_counts
from tensorsmith.data.fingerprint import file_digest
from tensorsmith.errors import RecipeError
from tensorsmith.evaluation.evaluate import Evaluator
from tensorsmith.evaluation.metrics import monitor_mode
from tensorsmith.recipe import Recipe
from tensorsmith.tasks import TASKS, Prepared, Task, create_task
from tensorsmith.tasks.base import Batch, LossOf
from tensorsmith.tasks.predictor import Predictor
from tensorsmith.training.run import train_module

__all__ = ["check_student", "distill", "distillation_loss", "soft_loss"]


def soft_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, logits: bool = True
) -> torch.Tensor:
    """The soft-target term: for ``logits``, T²·KL(teacher ‖ student) at temperature T over the
    last axis, averaged over rows (tokens of a language model); for values (a regression) or a
    single logit (binary), the mean squared difference between them."""
    s, t = student.float(), teacher.float()
    if not logits or s.dim() == 1 or s.shape[-1] == 1:
        return F.mse_loss(s.reshape(-1), t.reshape(-1))
    k = s.shape[-1]
    log_s = F.log_softmax(s.reshape(-1, k) / temperature, dim=-1)
    log_t = F.log_softmax(t.reshape(-1, k) / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


class _Given(nn.Module):
    """Stands in for the student inside the task's own loss: the scores already computed."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.scores


def distillation_loss(
    task_loss: LossOf, teacher: nn.Module, temperature: float, alpha: float, logits: bool = True
) -> LossOf:
    """``loss_of(student, batch)``: ``alpha`` of the soft-target term, ``1 − alpha`` of the
    task's own loss. A batch is ``(*inputs, target)``: every task's model reads ``batch[:-1]``.
    ``logits``: the outputs are logits (``Task.scores_are_logits``), else values."""
    teacher.eval()

    def loss_of(module: nn.Module, batch: Batch) -> torch.Tensor:
        inputs = batch[:-1]
        scores = module(*inputs)
        _follow(teacher, inputs[0].device)
        with torch.no_grad():
            target = teacher(*inputs)
        loss = alpha * soft_loss(scores, target, temperature, logits)
        if alpha < 1:
            loss = loss + (1 - alpha) * task_loss(_Given(scores), batch)
        return loss

    return loss_of


def _follow(teacher: nn.Module, device: torch.device) -> None:
    """Move the teacher to the device the trainer put the batch on (once)."""
    first = next(teacher.parameters(), None)
    if first is not None and first.device != device:
        teacher.to(device)


# ---------------------------------------------------------------------- checks


def _check_options(temperature: float, alpha: float) -> None:
    if not temperature > 0:
        raise RecipeError(
            f"--temperature is {temperature}; it must be above 0 (1 keeps the teacher's "
            "probabilities, 2 to 5 softens them)"
        )
    if not 0 <= alpha <= 1:
        raise RecipeError(
            f"--alpha is {alpha}; it must be within [0, 1] (the share of the teacher's soft "
            "targets in the loss; 1 − alpha goes to the task's own loss)"
        )


def _resolved(recipe: Recipe, value: Any) -> Any:
    return str(recipe.path(value).resolve()) if isinstance(value, str) else value


def _data_of(recipe: Recipe) -> dict[str, Any]:
    """The data section but its source, split file paths made absolute (as stored)."""
    data = recipe.data.model_dump(mode="json")
    data.pop("source")
    split = data.get("split")
    if isinstance(split, dict):
        for key in ("train", "valid", "test"):
            split[key] = _resolved(recipe, split.get(key))
    return data


def _differences(ours: dict[str, Any], theirs: dict[str, Any], prefix: str) -> list[str]:
    out = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} is {a!r}, the teacher's is {b!r}")
    return out


def _check_source(teacher: Predictor, task: Task) -> None:
    """The student's data files must hold the bytes the teacher was trained on (its data.json),
    wherever they lie; without a data.json, the same paths."""
    recorded = teacher.data.get("files", {})
    files = [p.resolve() for p in task.data_files() if p.is_file()]
    if recorded:
        ours = sorted(file_digest(p) for p in files)
        same = ours == sorted(str(v.get("sha256")) for v in recorded.values())
    else:
        same = {str(p) for p in files} == {str(p.resolve()) for p in teacher.task.data_files()}
    if not same:
        theirs = ", ".join(recorded) or str(teacher.recipe.data.source)
        raise RecipeError(
            f"the student's data.source ({task.recipe.data.source}) is not the data the teacher "
            f"{teacher.name} was trained on ({theirs}); point data.source at the teacher's data"
        )


def check_student(teacher: Predictor, student: Recipe) -> None:
    """The student must do the teacher's task on the teacher's data (RecipeError if not);
    the data files themselves are compared once the student's task exists."""
    if TASKS.get(student.task) is not TASKS.get(teacher.recipe.task):  # another task
        raise RecipeError(
            f"the student recipe's task is {student.task} but the teacher "
            f"{teacher.name} is a {teacher.recipe.task} model; a student learns the teacher's "
            f"task: set task: {teacher.recipe.task}"
        )
    diffs = _differences(_data_of(student), _data_of(teacher.recipe), "data.")
    if diffs:
        raise RecipeError(
            "the student trains on the teacher's data with the teacher's target and tokenizer, "
            f"but {'; '.join(diffs)}; copy the teacher's data section ({teacher.path}/recipe.yaml)"
        )
    block, theirs = (getattr(r.model, "block_size", None) for r in (student, teacher.recipe))
    if block is not None and theirs is not None and int(block) > int(theirs):
        raise RecipeError(
            f"the student's model.block_size is {block} but the teacher {teacher.name} reads "
            f"windows of at most {theirs} tokens; set model.block_size to {theirs} or less"
        )


def _check_prepared(teacher: Predictor, task: Task, prepared: Prepared) -> None:
    """What the data decided must be what the teacher was built for: the same label set (in
    the same order) and the same input and output sizes."""
    if task.labels != teacher.task.labels:
        raise RecipeError(
            f"the student's labels are {task.labels} but the teacher {teacher.name} predicts "
            f"{teacher.task.labels}; distil on data with the teacher's label set"
        )
    dims = teacher.config.get("dims", {})
    for key, value in prepared.dims.items():
        if key in dims and dims[key] != value:
            raise RecipeError(
                f"the student's {key} is {value} but the teacher {teacher.name}'s is "
                f"{dims[key]}; the student must read the teacher's inputs and predict its outputs"
            )


# ---------------------------------------------------------------------- the run


def _evaluator(task: Task, prepared: Prepared) -> tuple[Evaluator, str | None]:
    """The in-loop evaluation of the student (as the train verb builds it) and its mode."""
    recipe = task.recipe
    es = recipe.train.early_stopping
    monitor = es.monitor if es is not None else None
    if monitor is not None and monitor.startswith("valid_") and "valid" not in prepared.splits:
        raise RecipeError(
            f"the student's train.early_stopping.monitor is {monitor} but the valid split is "
            "empty; set data.split.valid or monitor train_loss"
        )
    mode = None
    if es is not None and monitor is not None:
        mode = es.mode if es.mode != "auto" else monitor_mode(monitor, task.metric_names, "monitor")
    return Evaluator(task, prepared.splits, recipe.evaluate.metrics, monitor), mode


def distill(
    teacher: Predictor,
    student_recipe: Recipe,
    console: Console,
    cache: Path,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> Child:
    """Train ``student_recipe``'s model to match ``teacher`` on the teacher's data.

    The child is a version of the teacher's model (the teacher's name, the student's model
    section); ``method`` records the teacher, the temperature, alpha and both sizes.
    """
    _check_options(temperature, alpha)
    check_student(teacher, student_recipe)
    recipe = student_recipe.model_copy(update={"name": teacher.recipe.name, "finetune": None})
    task = create_task(recipe)
    _check_source(teacher, task)
    task.inherit(teacher.task)
    prepared = task.prepare(cache, console)
    _check_prepared(teacher, task, prepared)
    evaluator, mode = _evaluator(task, prepared)
    logits = task.scores_are_logits
    loss = distillation_loss(task.loss(), teacher.module, temperature, alpha, logits)
    in_loop = evaluator.in_loop if evaluator.has_valid else None
    trained = train_module(task, prepared, in_loop, console, cache, monitor_mode=mode, loss=loss)
    teacher.module.cpu()
    student_n, teacher_n = parameter_counts(trained.module)[0], parameter_counts(teacher.module)[0]
    method = {
        "distill": {
            "teacher": teacher.name,
            "temperature": temperature,
            "alpha": alpha,
            "student_parameters": student_n,
            "teacher_parameters": teacher_n,
            "student_arch": recipe.model.arch,
        }
    }
    notes = [
        *prepared.notes,
        f"student {recipe.model.arch} with {student_n:,} parameters "
        f"({teacher_n / max(student_n, 1):.1f}× fewer than the teacher's {teacher_n:,}), "
        f"distilled at temperature {temperature:g}, alpha {alpha:g}",
    ]
    return Child(
        module=trained.module,
        recipe=recipe,
        dims=prepared.dims,
        method=method,
        notes=notes,
        history=trained.fit.history,
        run=trained.record,
    )
