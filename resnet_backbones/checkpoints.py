"""Where a run's checkpoints are: the OUTPUT_DIR/last_checkpoint marker both engines write, and the
line that tells a stopped run where to continue from."""
import os
from typing import Optional

__all__ = ["checkpoint_note", "last_checkpoint"]


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
