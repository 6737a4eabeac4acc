"""Multi-process launch (spawned or torchrun) and the few collective helpers the engine needs."""
import logging
import os
import socket
from typing import Any, Callable, List, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["launch", "get_rank", "get_world_size", "get_local_rank", "is_main_process", "all_gather", "synchronize"]

logger = logging.getLogger(__name__)
_LOCAL = {"rank": 0}


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_local_rank() -> int:
    return _LOCAL["rank"]


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    if get_world_size() > 1:
        dist.barrier()


def all_gather(obj: Any) -> List[Any]:
    """Gather a picklable object from every rank (list indexed by rank)."""
    if get_world_size() == 1:
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _init(rank: int, world_size: int, local_rank: int, local_size: int, init_method: str) -> None:
    _LOCAL.update(rank=local_rank)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    else:  # share the cores between the processes of this machine
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
    dist.init_process_group(_backend(), init_method=init_method, world_size=world_size, rank=rank)
    synchronize()


def _worker(local_rank: int, main_func: Callable, num_per_machine: int, num_machines: int, machine_rank: int,
            dist_url: str, args: Tuple) -> None:
    world_size = num_per_machine * num_machines
    _init(machine_rank * num_per_machine + local_rank, world_size, local_rank, num_per_machine, dist_url)
    try:
        main_func(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(main_func: Callable, num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = "auto", args: Tuple = ()) -> None:
    """Run ``main_func(*args)`` on ``num_gpus_per_machine x num_machines`` processes (detectron2's launch).

    - Started by torchrun (WORLD_SIZE > 1 in the environment): joins that group (env://).
    - One process in all: calls main_func directly.
    - Otherwise spawns ``num_gpus_per_machine`` processes here, one per GPU (NCCL); on a machine
      without CUDA, one CPU process each on gloo. ``dist_url`` is ``tcp://host:port`` of machine 0
      (``auto`` picks a free local port, single machine only).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        _init(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)),
              local_size, "env://")
        try:
            main_func(*args)
        finally:
            dist.destroy_process_group()
        return
    world_size = num_gpus_per_machine * num_machines
    if world_size <= 1:
        main_func(*args)
        return
    if torch.cuda.is_available() and torch.cuda.device_count() < num_gpus_per_machine:
        raise ValueError(f"--num-gpus {num_gpus_per_machine} but this machine has {torch.cuda.device_count()} GPUs")
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto works on one machine only; give tcp://<machine 0>:<port>")
        dist_url = f"tcp://127.0.0.1:{_free_port()}"
    mp.start_processes(_worker, nprocs=num_gpus_per_machine, start_method="spawn",
                       args=(main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args))
