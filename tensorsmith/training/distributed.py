"""Several processes training one model, on ``torch.distributed``.

A process started by ``torchrun`` (or ``tensorsmith train --nproc-per-node N``, which runs
torchrun's own launcher) finds ``RANK`` / ``WORLD_SIZE`` in its environment; :func:`join` opens
the process group (gloo on CPU, NCCL on GPU) and says which strategy the run uses:

- ``ddp``: ``DistributedDataParallel``, every architecture; each rank holds the whole model.
- ``fsdp``: FSDP2 (``fully_shard``) over the model's blocks (``Module.fsdp_blocks``), the
  parameters, gradients and optimizer state sharded over the ranks; bf16 compute with fp32
  gradient reduction where the run's precision is bf16.

Every rank draws the same seeded global batch and trains on its shard of it (``data.loading``);
the loss of a shard is weighted by its share of the batch, so the averaged gradient is the
gradient of the global batch, whatever the world size. Decisions (stop, save, interrupted) are
agreed by an all-reduce each step, so every rank stops at the same step.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn

from tensorsmith.errors import RecipeError

__all__ = ["World", "check_batch", "join", "leave", "strategy_for"]

TIMEOUT = dt.timedelta(minutes=10)  # a collective that waits this long has lost a rank


def strategy_for(setting: str, size: int) -> str:
    """The strategy of ``train.distributed`` for ``size`` processes (one process has nothing to
    share or shard: it trains alone, and resumes a checkpoint of any strategy)."""
    if size == 1:
        return "none"
    if setting == "auto":
        return "ddp"
    if setting == "none" and size > 1:
        raise RecipeError(
            f"train.distributed is none but {size} processes run; set it to ddp or fsdp, or "
            "run one process"
        )
    return setting


def check_batch(batch_size: int | str, size: int) -> None:
    """The global batch must split evenly over the ranks (each trains on batch / size rows);
    ``full`` (every row in one batch) splits as evenly as the rows do, weighted exactly."""
    if not isinstance(batch_size, int) or batch_size % size == 0:
        return
    below = batch_size - batch_size % size
    nearest = " or ".join(str(b) for b in (below, below + size) if b > 0)
    raise RecipeError(
        f"train.batch_size {batch_size} does not split over {size} processes; each trains on "
        f"batch_size / {size} rows: set train.batch_size to {nearest}"
    )


@dataclass
class World:
    """This process's place among the ranks of one training run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    strategy: str = "none"
    backend: str = ""
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def many(self) -> bool:
        return self.size > 1

    def record(self) -> dict[str, Any]:
        """For run.json."""
        return {"world_size": self.size, "backend": self.backend or None, "strategy": self.strategy}

    # ------------------------------------------------------------------ collectives

    def agree(self, *flags: bool) -> list[bool]:
        """Each flag true on every rank when it is true on any (one all-reduce)."""
        if not self.many:
            return list(flags)
        t = torch.tensor([int(f) for f in flags], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.many:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.many:
            return [value]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.many:
            dist.barrier()

    # ------------------------------------------------------------------ the model

    def wrap(self, module: nn.Module, bf16: bool) -> nn.Module:
        """The module the ranks train: DDP's wrapper, or the module itself sharded in place."""
        if self.strategy == "ddp":
            ids = [self.local_rank] if self.device.startswith("cuda") else None
            return nn.parallel.DistributedDataParallel(module, device_ids=ids)
        if self.strategy == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mesh = init_device_mesh(self.device.split(":")[0], (self.size,))
            policy = MixedPrecisionPolicy(
                param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32
            )
            # the architecture names its blocks (api.distributed.check_ranks made sure)
            for block in cast(Any, module).fsdp_blocks():
                fully_shard(block, mesh=mesh, mp_policy=policy)
            fully_shard(module, mesh=mesh, mp_policy=policy)
        return module

    def weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """A copy of the whole model's weights (gathered from the shards, on rank 0, for FSDP)."""
        if self.strategy != "fsdp":
            return {k: v.detach().clone() for k, v in module.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return cast(dict[str, torch.Tensor], get_model_state_dict(module, options=options))

    def load_weights(self, module: nn.Module, weights: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`weights` returned (rank 0's copy, sent to every shard for FSDP)."""
        if self.strategy != "fsdp":
            module.load_state_dict(weights)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(module, cast(dict[str, Any], weights), options=options)


def join(setting: str) -> World:
    """This process's world: one process, or a rank of a torchrun job (the group opened)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    strategy = strategy_for(setting, size)
    if size == 1:
        return World(strategy=strategy)
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        _stop_with_the_agent()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = f"cuda:{local}" if cuda else "cpu"
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        store = _store(rank, size)
        dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=TIMEOUT)
    return World(rank, size, local, strategy, backend, device)


def _stop_with_the_agent() -> None:
    """torchrun starts each rank in a session of its own, so a launcher killed with SIGKILL
    would leave its ranks training. On Linux a rank asks for SIGTERM when its parent (the
    agent) dies: the ranks then agree on a step, save a checkpoint and stop."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the agent died before the request: stop now
        os.kill(os.getpid(), signal.SIGTERM)


def _store(rank: int, size: int) -> dist.Store:
    """The ranks' key-value store, its keys under this attempt's prefix: after torchrun's agent
    restarts the ranks (--max-restarts), the addresses the dead ranks published are not read."""
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # else rank 0 hosts it
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    store = dist.TCPStore(host, port, size, is_master=not agent and rank == 0, timeout=TIMEOUT)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"tensorsmith/attempt-{attempt}/", store)


def leave(world: World) -> None:
    if world.many and dist.is_initialized():
        dist.destroy_process_group()
