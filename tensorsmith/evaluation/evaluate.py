"""The one evaluation path: in the training loop, after training, and for ``evaluate``.

Every number comes from :func:`evaluate`: the task turns each batch into outputs, the outputs
of a split are collected, the task decodes them into the units its metrics read, and
``METRICS`` computes them. In-loop validation, the final valid/test metrics and ``tensorsmith
evaluate`` therefore agree by construction. The final metrics and ``evaluate`` also score the
task's baselines on the same split with the same metrics (``Task.reference_outputs``), recorded
beside the model's as ``<baseline>_<metric>`` (``naive_rmse``, ``majority_f1_macro``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from tensorsmith.evaluation.metrics import METRICS, MetricValue, compute_metrics
from tensorsmith.tasks import Batch, EvalSplit, Outputs, Task

__all__ = ["Evaluator", "collect", "evaluate", "scored"]


def _device(module: nn.Module) -> torch.device:
    first = next(module.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def collect(task: Task, module: nn.Module, batches: Iterable[Batch], ranks: Any = None) -> Outputs:
    """Run ``module`` over ``batches`` (no gradients) and decode the outputs of the split.

    ``ranks`` (a ``training.distributed.World`` of several processes) shards the work: rank r
    runs batches r, r + size, …, and the parts are gathered in the split's order, so every
    rank decodes the same outputs as one process would.
    """
    if ranks is not None and ranks.many:
        return _collect_shared(task, module, list(batches), ranks)
    loss_sum, count, parts = _run(task, module, batches)
    arrays: dict[str, np.ndarray] = {k: torch.cat(v).numpy() for k, v in parts.items()}
    return task.outputs(arrays, float(loss_sum) / max(count, 1))


def _collect_shared(task: Task, module: nn.Module, batches: list[Batch], ranks: Any) -> Outputs:
    mine = list(range(ranks.rank, len(batches), ranks.size))
    rounds = -(-len(batches) // ranks.size)
    # a sharded (FSDP) model's forward is a collective: every rank runs as many batches, the
    # padding ones (a repeat of the last) discarded
    padding = [len(batches) - 1] * (rounds - len(mine)) if batches else []
    loss_sum, count, parts = _run(task, module, [batches[i] for i in mine + padding], len(mine))
    gathered = ranks.gather((mine, float(loss_sum), count, parts))
    order = sorted(
        (i, rank, j) for rank, (idx, *_rest) in enumerate(gathered) for j, i in enumerate(idx)
    )
    keys = gathered[0][3].keys()
    arrays = {k: torch.cat([gathered[r][3][k][j] for _, r, j in order]).numpy() for k in keys}
    total = sum(g[1] for g in gathered) / max(sum(g[2] for g in gathered), 1)
    return task.outputs(arrays, total)


def _run(
    task: Task, module: nn.Module, batches: Iterable[Batch], keep: int | None = None
) -> tuple[torch.Tensor, int, dict[str, list[torch.Tensor]]]:
    """(loss sum, count, outputs per key and batch) of the first ``keep`` batches."""
    device = _device(module)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    count = 0
    parts: dict[str, list[torch.Tensor]] = {}
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if device.type != "cpu":
                    batch = tuple(t.to(device, non_blocking=True) for t in batch)
                out = task.batch_outputs(module, batch)
                if keep is not None and i >= keep:
                    continue
                loss_sum += out.pop("loss_sum").detach().double()
                count += int(out.pop("count"))
                for key, value in out.items():
                    parts.setdefault(key, []).append(value.detach().float().cpu())
    finally:
        module.train(was_training)
    return loss_sum, count, parts


def scored(
    task: Task, split: EvalSplit, outputs: Outputs, names: Sequence[str]
) -> dict[str, MetricValue]:
    """The named metrics of a split's outputs, then each baseline's as ``<baseline>_<metric>``."""
    outputs.split = split
    result = compute_metrics(names, outputs)
    for baseline, out in task.reference_outputs(split, outputs).items():
        usable = [
            n
            for n in names
            if METRICS[n].scalar and not (METRICS[n].needs_proba and out.proba is None)
        ]
        for name, value in compute_metrics(usable, out).items():
            result[f"{baseline}_{name}"] = value
    return result


def evaluate(
    task: Task,
    module: nn.Module,
    split: EvalSplit,
    names: Sequence[str],
    limit: int | None = None,
) -> dict[str, MetricValue]:
    """The named metrics of ``module`` on one split (and of the task's baselines)."""
    return scored(task, split, collect(task, module, split.batches(limit)), names)


class Evaluator:
    """Evaluation of one training run: ``in_loop`` for the trainer, ``final`` for the artifact.

    ``in_loop`` measures the loss and the metrics the loop watches (the task's own, such as
    perplexity, and the early-stopping monitor) on the valid split, with the task's batch limit;
    ``final`` measures every recipe metric on every evaluation split, in full.
    """

    def __init__(
        self,
        task: Task,
        splits: Mapping[str, EvalSplit],
        metrics: Sequence[str],
        monitor: str | None = None,
        ranks: Any = None,
    ) -> None:
        self.task = task
        self.ranks = ranks  # several processes: in-loop evaluation is sharded over them
        self.splits = dict(splits)
        self.metrics = list(metrics)
        watched = [*task.loop_metrics]
        if monitor and monitor.startswith("valid_") and monitor != "valid_loss":
            watched.append(monitor.removeprefix("valid_"))
        self.watched = list(dict.fromkeys(watched))

    @property
    def has_valid(self) -> bool:
        return "valid" in self.splits

    def in_loop(self, module: nn.Module) -> dict[str, float]:
        """``valid_loss`` and ``valid_<metric>`` for each watched metric."""
        batches = self.splits["valid"].batches(self.task.eval_limit)
        outputs = collect(self.task, module, batches, self.ranks)
        row = {"valid_loss": outputs.loss}
        for name, value in compute_metrics(self.watched, outputs).items():
            row[f"valid_{name}"] = float(value)  # type: ignore[arg-type]
        return row

    def final(self, module: nn.Module) -> dict[str, dict[str, MetricValue]]:
        """Every recipe metric on every split, with each split's outputs kept for plots."""
        self.outputs: dict[str, Outputs] = {}
        result: dict[str, dict[str, Any]] = {}
        for name, split in self.splits.items():
            self.outputs[name] = collect(self.task, module, split.batches())
            result[name] = scored(self.task, split, self.outputs[name], self.metrics)
        return result
