"""One job on many processes, GPUs or machines, started by PyTorch's own launcher, torchrun:

    torchrun --nproc_per_node 4 -m ldm txt2img --from-file prompts.txt ...

torchrun starts the processes and gives each its place in the environment: RANK (0..WORLD_SIZE-1
over all machines), WORLD_SIZE, LOCAL_RANK (its GPU on its machine) and MASTER_ADDR:MASTER_PORT,
where a key-value store (torch.distributed's TCPStore, kept by torchrun's agent) serves them all.
A process started without torchrun is a world of one, and nothing here touches torch.distributed.

What the processes share is small: the run's numbering base and its record (the main process, rank
0, decides and broadcasts them), a counter in the store from which each process takes its next
batch (so a fast GPU takes more batches than a slow one), and a queue in the store through which
each image's manifest line reaches the main process, the only one that writes the manifest and
draws the progress bar. The process group: gloo on the CPU; on CUDA, NCCL for CUDA tensors and gloo
for the Python objects that are broadcast ("cpu:gloo,cuda:nccl"). No tensor of a model or an image
crosses between processes: an image is never split across devices (docs/scale.md).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import torch

T = TypeVar("T")
STORE_TIMEOUT = datetime.timedelta(minutes=30)  # how long a process waits for a key another one will set


def launched() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ValueError(f"RANK={os.environ.get('RANK')!r}, WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}, "
                         f"LOCAL_RANK={os.environ.get('LOCAL_RANK')!r}: not whole numbers; start the "
                         "processes with torchrun") from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} with WORLD_SIZE={world}: the rank must be in 0..{world - 1}")
    return rank, world, local


def device_for_rank(device: torch.device) -> torch.device:
    """Each process of a CUDA job takes the GPU of its LOCAL_RANK (cuda -> cuda:LOCAL_RANK)."""
    rank, world, local = launched()
    if world == 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise ValueError(f"--device {device} with {world} processes: each process takes the GPU of its LOCAL_RANK; "
                         "give --device cuda")
    if local >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK={local}, but this machine has {torch.cuda.device_count()} GPU(s); start at "
                         "most that many processes per machine (torchrun --nproc_per_node)")
    return torch.device("cuda", local)


@dataclass
class Ranks:
    """This process's place in the job, and what the processes share (a world of one by default)."""

    rank: int = 0
    size: int = 1
    store: Any = None  # a torch.distributed Store, shared by the processes (None: a world of one)
    _counters: dict[str, int] = field(default_factory=dict)
    _published: list[str] = field(default_factory=list)
    _taken: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, make: Callable[[], T]) -> T:
        """make() on the main process, its result (or its exception) on every process."""
        if self.size == 1:
            return make()
        outcome: list[Any] = [None]
        if self.is_main:
            try:
                outcome[0] = (True, make())
            except Exception as error:  # noqa: BLE001 - raised again on every process, below
                outcome[0] = (False, error)
        torch.distributed.broadcast_object_list(outcome, src=0)
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()

    def take(self, counter: str) -> int:
        """The next number of `counter` (0, 1, 2, ... over all processes together): each number is
        handed to exactly one process."""
        if self.store is None:
            self._counters[counter] = self._counters.get(counter, -1) + 1
            return self._counters[counter]
        return self.store.add(f"counter/{counter}", 1) - 1

    def publish(self, line: str) -> None:
        """Send one line to the main process (received(), in the order they were sent)."""
        if self.store is None:
            self._published.append(line)
            return
        number = self.store.add("published", 1)
        self.store.set(f"line/{number}", line)

    def received(self) -> list[str]:
        """Main process: the lines published since the last call, by any process."""
        if self.store is None:
            lines, self._published = self._published, []
            return lines
        sent = self.store.add("published", 0)
        lines = []
        for number in range(self._taken + 1, sent + 1):
            key = f"line/{number}"
            lines.append(self.store.get(key).decode())  # waits for a set() that follows its add()
            self.store.delete_key(key)
        self._taken = sent
        return lines

    def close(self) -> None:
        if self.size > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def join(device: torch.device) -> Ranks:
    """This process's Ranks: a world of one without torchrun; with it, the process group joined
    (gloo, or NCCL and gloo on CUDA) and the launcher's store opened under a prefix of this run."""
    rank, world, _ = launched()
    if world == 1:
        return Ranks()
    backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend, init_method="env://", timeout=STORE_TIMEOUT)
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    store = torch.distributed.TCPStore(host, port, is_master=False, timeout=STORE_TIMEOUT)
    # torchrun restarts the processes of a failed run (--max-restarts) on the same store: a fresh
    # prefix for each attempt, so that its counters start from zero.
    attempt = f"{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    return Ranks(rank=rank, size=world, store=torch.distributed.PrefixStore(f"ldm/{attempt}/", store))

