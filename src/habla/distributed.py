"""Several processes for one stage, on the engine users already have: `accelerate launch`.

In: `train.processes` (and `train.strategy`) from params. Out: the stage started again under
`accelerate launch` when more than one process is asked for (one per GPU, or CPU processes
over gloo), this process's rank, helpers to give each process its share of the work and to
bring the results back to the main process, which alone writes the stage's outputs.
A single process (the default) never imports torch.distributed and runs exactly as before.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")
LAUNCHED_ENV = "HABLA_LAUNCHED"  # set in the processes `accelerate launch` starts for habla


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(processes: int, strategy: str, argv: Sequence[str],
                   cuda: bool) -> list[str]:
    """The `accelerate launch` command line that runs `argv` (a script and its arguments)
    in `processes` processes on this machine."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes",
           str(processes), "--num_machines", "1", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port())]
    if strategy == "fsdp":
        cmd += ["--use_fsdp", "--fsdp_sharding_strategy", "FULL_SHARD",
                "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
                "--fsdp_use_orig_params", "true"]
    else:
        cmd += ["--multi_gpu"]
    if not cuda:
        cmd += ["--num_cpu_threads_per_process", os.environ.get("OMP_NUM_THREADS", "1")]
    return [*cmd, *argv]


def relaunch(processes: int, strategy: str = "ddp") -> int | None:
    """Run this stage again in `processes` processes and return their exit code; None when
    this process should do the work itself (one process, or already launched)."""
    if processes <= 1 or os.environ.get(LAUNCHED_ENV) or world_size() > 1:
        return None
    import torch

    cuda = torch.cuda.is_available()
    if cuda and torch.cuda.device_count() < processes:
        from habla.errors import StageError

        raise StageError(f"train.processes is {processes} but this machine has "
                         f"{torch.cuda.device_count()} GPU(s): lower it or use a bigger box")
    env = {**os.environ, LAUNCHED_ENV: "1"}
    if not cuda:
        env["ACCELERATE_USE_CPU"] = "true"  # gloo between CPU processes
    argv = [sys.argv[0], *sys.argv[1:]]
    return subprocess.run(launch_command(processes, strategy, argv, cuda), env=env).returncode


def shard(items: Sequence[T]) -> list[T]:
    """This process's share of `items`: every world_size-th item, from its rank."""
    return list(items[rank()::world_size()])


def gather(objects: list[Any]) -> list[Any]:
    """Every process's `objects`, concatenated in rank order (on every process); a single
    process gets its own list back."""
    if world_size() == 1:
        return list(objects)
    from accelerate import PartialState
    from accelerate.utils import gather_object

    PartialState()  # joins the process group the launcher set up
    return list(gather_object(objects))


def interleave(shares: list[list[T]]) -> list[T]:
    """Undo `shard`: items from the per-rank lists in their original order."""
    out: list[T] = []
    longest = max((len(s) for s in shares), default=0)
    for i in range(longest):
        out.extend(s[i] for s in shares if i < len(s))
    return out


def gather_shards(mine: list[T]) -> list[T]:
    """The full list back on every process, in the order `shard` split it."""
    if world_size() == 1:
        return list(mine)
    return interleave(gather([mine]))


def barrier() -> None:
    if world_size() > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
