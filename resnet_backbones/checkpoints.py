"""Where a run's checkpoints are: the OUTPUT_DIR/last_checkpoint marker both engines write, the line that
tells a stopped run where to continue from, and the state every process evaluates (the checkpoint's)."""
import itertools
import os
from typing import Optional

import torch
import torch.distributed as dist

__all__ = ["checkpoint_note", "last_checkpoint", "share_main_process_state"]


def last_checkpoint(output_dir: str) -> Optional[str]:
    """The checkpoint OUTPUT_DIR/last_checkpoint names (both engines write this marker), or None."""
    marker = os.path.join(output_dir, "last_checkpoint")
    if not os.path.isfile(marker):
        return None
    with open(marker) as f:
        path = os.path.join(output_dir, f.read().strip())
    return path if os.path.isfile(path) else None


def checkpoint_note(output_dir: str, *, stopped_in_iteration: bool = False) -> str:
    """Where a stopped run can continue from: the last checkpoint, or that none has been written.

    ``stopped_in_iteration``: the run stopped inside an iteration (the divergence guard), so the note
    says the checkpoint was written before it.
    """
    path = last_checkpoint(output_dir)
    if path is None:
        return f"No checkpoint has been written yet ({os.path.join(output_dir, 'last_checkpoint')} is absent)."
    if stopped_in_iteration:
        return f"The last checkpoint, written before this iteration: {path}."
    return f"The last checkpoint: {path} (--resume continues from it)."


def share_main_process_state(model: torch.nn.Module) -> int:
    """Every process of a multi-process run takes process 0's parameters and buffers; returns how many tensors
    were sent (0 in a single process).

    Both engines call it before an evaluation during or after training. Process 0 writes the checkpoints
    (``model_final.pth``), and under DistributedDataParallel the processes agree on the parameters but not
    on the buffers. detectron2 creates its DDP model with ``broadcast_buffers=False``
    (``detectron2.engine.defaults.create_ddp_model``); the torchvision engine keeps DDP's default, which sends
    process 0's buffers before each training forward, and that forward then updates each copy from its own
    images. Either way each process's BN running statistics end on its own images. Evaluated as they were,
    the images of process k would see process k's statistics, and the AP printed at the end of training would
    not be the AP of the file it saved (``--eval-only`` of that file). SyncBN and FrozenBN keep no per-process statistics; plain BN
    does. Training is unchanged by this: BN in training mode normalises with the batch's statistics.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return 0
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    count = 0
    with torch.no_grad():
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            dist.broadcast(tensor.data, src=0)
            count += 1
    return count
