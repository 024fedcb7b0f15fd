"""Training on several processes with PyTorch's own engine: torchrun and DistributedDataParallel.

`torchrun --nproc_per_node=N -m minitransformer train ...` starts N copies of the command, each
with RANK, LOCAL_RANK and WORLD_SIZE in its environment. `start_distributed` reads them, joins
the process group (NCCL between GPUs, gloo between CPUs) and picks this rank's device; without
torchrun (or with one process) nothing changes.

Design choices:
- The ranks split one global batch: each draws the same world x B windows from the same seeded
  generator and keeps its slice (data.get_batch); DDP averages the gradients, so N ranks with
  batch B take exactly the steps of one process with batch N x B.
- Rank 0 alone prints, writes metrics and checkpoints, and holds the run folder's lock; every
  rank computes the same evaluation (averaged over ranks), schedule and decisions, and the
  decisions that could differ (Ctrl-C seen by one rank, rank 0's clock) are agreed on with a
  collective each step, so all ranks stop at the same step.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..machine.device import choose_device
from ..errors import UserError


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Replace tensor by its mean over all ranks, in place, without waiting for the result."""
        if self.world > 1:
            dist.all_reduce(tensor)
            tensor.div_(self.world)
        return tensor

    def mean(self, value: float) -> float:
        """The mean of value over all ranks."""
        if self.world == 1:
            return value
        return self.average_(torch.tensor([value], dtype=torch.float64, device=self.device)).item()

    def any(self, flag: bool) -> bool:
        """True on every rank when flag is True on any rank."""
        if self.world == 1:
            return flag
        tensor = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def from_main(self, value: float) -> float:
        """Rank 0's value, on every rank."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, src=0)
        return tensor.item()

    def main_first(self, work):
        """Run work() on rank 0, then on the other ranks (which then reuse what it wrote: the
        tokenised data). A UserError on rank 0 is raised on every rank, so none waits forever."""
        if self.world == 1:
            return work()
        result, failure = None, None
        if self.main:
            try:
                result = work()
            except UserError as error:
                failure = str(error)
        shared = [failure]
        dist.broadcast_object_list(shared, src=0)
        if shared[0] is not None:
            error = UserError(shared[0])
            error.everywhere = True
            raise error
        return result if self.main else work()

    def lost_peer(self, error: BaseException) -> bool:
        """True when error is a collective failing because another rank died (torchrun then stops
        this one too): gloo and NCCL report it as a RuntimeError naming themselves or the connection."""
        if self.world == 1:
            return False
        if isinstance(error, dist.DistError):
            return True
        text = str(error)
        return isinstance(error, RuntimeError) and any(word in text for word in ("gloo", "NCCL", "Connection"))

    @property
    def device(self) -> torch.device:
        """Where collectives run: this rank's GPU under NCCL, the CPU under gloo."""
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start_distributed(device_name: str) -> tuple[Ranks, torch.device]:
    """Join torchrun's process group if there is one; returns this process's ranks and device."""
    if not under_torchrun():
        return Ranks(), choose_device(device_name)
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    device = choose_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)  # one GPU per process on each machine
        torch.cuda.set_device(device)
    elif device.type == "mps":
        raise UserError("torchrun with several processes needs CUDA GPUs or the CPU; use --device cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ranks.rank, world_size=ranks.world)
    return ranks, device


def stop_distributed(finished: bool) -> None:
    """Leave the process group. After a finished run, first wait for every rank: a rank that left
    while another still used the group would make gloo abort that other one."""
    if dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
