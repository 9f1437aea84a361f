"""Ranks, from torch.distributed: ``torchrun <options> questbench run`` (any number of nodes), or ranks that
``questbench run`` launches itself on a multi-core CPU through torchrun's own launcher API
(``torch.distributed.launcher.elastic_launch``). Nothing here schedules processes by hand.

Why ranks, and not a process pool, for the default run: the ranks are the same code path as a torchrun job
(one mechanism to test, and a CPU run exercises what a GPU cluster runs); the launcher ends every rank when one
fails or when the launching process dies (torch's spawn sets the parent-death signal), and a rank's bug reaches
the terminal as the rank's own traceback.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from datetime import timedelta
from typing import Optional

from ..errors import QuestbenchError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> Ranks:
    """This process's place in a torchrun job (RANK, WORLD_SIZE, LOCAL_RANK), or a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(device: str, ranks: Ranks) -> str:
    """Each rank of a GPU job on its own GPU (LOCAL_RANK); ``cuda:N`` given explicitly is kept."""
    if ranks.world > 1 and device == "cuda":
        return f"cuda:{ranks.local_rank}"
    return device


def init(ranks: Ranks, device: str) -> None:
    """Join the job's process group: gloo on CPU, nccl on GPU. The timeout is long because ranks meet only
    before and after their whole share of a suite, which may take hours."""
    if ranks.world <= 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl", timeout=timedelta(days=7), device_id=torch.device(device))
    else:
        dist.init_process_group("gloo", timeout=timedelta(days=7))


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        import torch.distributed as dist
        dist.barrier()


def shutdown(ranks: Ranks) -> None:
    if ranks.world > 1:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


def local_ranks(device: str, requested: Optional[int], threads: int) -> int:
    """How many ranks ``questbench run`` starts on this host when not under torchrun: the number asked for,
    else on a CPU one single-threaded rank per thread torch would use (on 2 cores: 2), else 1. Decided by
    the machine and the command, never by which jobs are left, so a resumed run computes like the first."""
    if requested is not None:
        return requested
    if device != "cpu" or from_env().world > 1:
        return 1
    return max(1, threads)


LAUNCHER_ENV = "QUESTBENCH_LAUNCHER_PID"
HELD_ENV = "QUESTBENCH_FOLDER_HELD"  # the results folder the launcher holds for the ranks it started


def launch(nproc: int, command: list[str], out: Path) -> None:
    """Run ``command`` as ``nproc`` local ranks, single-threaded, with torchrun's launcher (standalone
    rendezvous on a free port): each rank in a session of its own, so a terminal's Ctrl-C reaches this process
    only, which stops them all. A rank that fails ends the others; the launcher then raises
    ``ChildFailedError`` with each failed rank's exit code. The launcher's per-rank files go to ``out/.ranks``
    (one run holds a folder at a time, so a folder a killed launcher left is removed by the next)."""
    import logging
    import shutil
    import signal
    import uuid

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from .outdir import LAUNCHER_LOGS  # inside --out: nothing is written outside it, even if this is SIGKILLed

    # the launcher logs each rank's failure with a traceback of its own; the ranks report for themselves
    for name in list(logging.root.manager.loggerDict):  # elastic gives each of its modules a logger of its own
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    # Ctrl-C stays this command's: the launcher (which sets TORCHELASTIC_SIGNALS_TO_HANDLE from this field) would
    # otherwise pass SIGINT on to the ranks, and one still importing would print a KeyboardInterrupt traceback
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                          signals_to_handle="SIGTERM,SIGHUP,SIGQUIT",
                          logs_specs=DefaultLogsSpecs(log_dir=str(logs := Path(out) / LAUNCHER_LOGS)))
    if logs.is_symlink():  # rmtree refuses a link and the launcher would then write through it
        raise QuestbenchError(f"--out {out}: {LAUNCHER_LOGS} is a symbolic link; questbench writes nothing "
                              "through a link (remove it)")
    shutil.rmtree(logs, ignore_errors=True)
    created = not Path(out).exists()
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", LAUNCHER_ENV, "TORCHELASTIC_SIGNALS_TO_HANDLE",
                                            HELD_ENV)}
    # Ctrl-C stays this command's (it raises here, and the launcher then stops the ranks with SIGTERM)
    os.environ.update({"OMP_NUM_THREADS": "1", LAUNCHER_ENV: str(os.getpid()), HELD_ENV: str(Path(out).resolve())})
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    try:
        elastic_launch(config, command[0])(*command[1:])
    finally:
        for signum, handler in handlers.items():  # the launcher's own handlers raise its SignalException
            signal.signal(signum, handler)
        shutil.rmtree(logs, ignore_errors=True)  # the launcher's per-rank error files; the ranks print their own
        if created and Path(out).is_dir() and not any(Path(out).iterdir()):  # the ranks refused to start: leave no folder behind
            Path(out).rmdir()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def launched_by() -> Optional[int]:
    """The pid of the `questbench run` that launched this rank, if one did."""
    pid = os.environ.get(LAUNCHER_ENV)
    return int(pid) if pid and from_env().world > 1 else None


def first_to_report(key: str) -> bool:
    """Whether this process is the first rank of its launch to report ``key``: an error every rank meets (a full
    disk, a missing file) is printed once. A process questbench did not launch always reports."""
    import hashlib

    from .outdir import LAUNCHER_LOGS

    held = os.environ.get(HELD_ENV)
    if launched_by() is None or not held:
        return True
    marker = Path(held) / LAUNCHER_LOGS / f"reported-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # an empty file: no data block needed
        return True
    except FileExistsError:
        return False
    except OSError:
        return True


def watch_launcher() -> None:
    """End this rank (SIGTERM to itself: it exits as if told to stop) if the process that launched it dies, even
    by SIGKILL: a rank runs in a session of its own, so nothing else would end it."""
    import signal
    import threading
    import time

    launcher = launched_by()

    def watch():
        while os.getppid() == launcher:
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="questbench-launcher-watch").start()


class Tickets:
    """A counter all ranks draw from, kept in the job's torch.distributed key-value store: units handed out one
    at a time to whichever rank is free (for work whose cost the plan cannot predict, such as AutoAttack, whose
    time depends on how many samples survive its first attack)."""

    def __init__(self, ranks: Ranks, name: str):
        self.name = f"questbench/{name}"
        self.local = 0
        self.store = None
        if ranks.world > 1:
            from torch.distributed import distributed_c10d
            self.store = distributed_c10d._get_default_store()

    def draw(self) -> int:
        if self.store is None:
            self.local += 1
            return self.local - 1
        return int(self.store.add(self.name, 1)) - 1
