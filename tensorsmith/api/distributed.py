"""``train`` / ``finetune`` with ``nproc_per_node``: the same verb, run as N ranks by torchrun.

Everything a rank would refuse is checked here first, before a process starts: the strategy for
the world size, a batch that does not split over the ranks, FSDP for an architecture without
blocks, a busy port, more processes than cores or GPUs. The ranks then run the verb itself
(``python -m tensorsmith train …``); rank 0 stores the version and names it to this process.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tensorsmith.api.model import Model
from tensorsmith.api.recipes import RecipeLike
from tensorsmith.errors import RecipeError, TrainingError
from tensorsmith.models import shardable
from tensorsmith.recipe import Recipe
from tensorsmith.tasks.predictor import Predictor
from tensorsmith.training.distributed import check_batch, strategy_for
from tensorsmith.training.launch import check_world, launch

__all__ = ["Launch", "check_ranks", "run_ranks"]


class Launch:
    """How many ranks, and the launcher's own options."""

    def __init__(self, nproc: int, max_restarts: int = 0, port: int | None = None) -> None:
        self.nproc, self.max_restarts, self.port = nproc, max_restarts, port

    @classmethod
    def of(cls, nproc: int | None, max_restarts: int = 0, port: int | None = None) -> Launch | None:
        """The command line's options: None (no --nproc-per-node) trains in this process."""
        if nproc is None and (max_restarts or port is not None):
            raise RecipeError("--max-restarts and --master-port go with --nproc-per-node N")
        return cls(nproc, max_restarts, port) if nproc is not None else None


def check_ranks(parsed: Recipe, nproc: int) -> None:
    """What ``nproc`` ranks of this recipe need: checked by the launcher before it starts them,
    and by each rank (``torchrun -m tensorsmith`` starts ranks without our launcher)."""
    strategy = strategy_for(parsed.train.distributed, nproc)
    check_batch(parsed.train.batch_size, nproc)
    if strategy == "fsdp" and not shardable(parsed.model.arch):
        raise RecipeError(
            f"train.distributed: fsdp shards a model by its blocks, and the {parsed.model.arch} "
            "architecture has none; use ddp (every architecture), or fsdp with gpt, hf-causal "
            "or hf-encoder"
        )


def run_ranks(
    verb: str,
    recipe: RecipeLike,
    parsed: Recipe,
    overrides: list[str] | None,
    store: str | Path | None,
    resume: bool | str,
    ranks: Launch | int,
    source: str | None = None,
) -> Model:
    """Run ``verb`` on ``recipe`` as ``ranks`` processes (a number, or the launcher's options);
    the version rank 0 stored."""
    ranks = Launch(ranks) if isinstance(ranks, int) else ranks
    if not isinstance(recipe, str | Path):
        raise RecipeError(
            "several processes read the recipe from its file: pass a recipe path, not a mapping"
        )
    check_world(ranks.nproc)  # first: the other checks divide by it
    check_ranks(parsed, ranks.nproc)
    argv = [verb, str(Path(recipe).resolve())]
    argv += [a for s in overrides or [] for a in ("--set", s)]
    if store is not None:
        argv += ["--store", str(Path(store).resolve())]
    if source is not None:
        argv += ["--from", source]
    if resume:
        argv += ["--resume", *(["--run-id", resume] if isinstance(resume, str) else [])]
    with tempfile.TemporaryDirectory(prefix="tensorsmith-ranks-") as tmp:
        result = Path(tmp) / "version"
        launch(argv, ranks.nproc, ranks.max_restarts, ranks.port, result)
        if not result.is_file():
            raise TrainingError("the ranks finished but rank 0 stored no version")
        path = Path(result.read_text(encoding="utf-8"))
    return Model(Predictor.load(path))
