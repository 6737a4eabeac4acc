"""A training or evaluation loader's errors as the user should read them: a DataLoader worker's error with
its own message, and a data error that stops training with its iteration, fix and checkpoint.

PyTorch re-raises a worker's exception in the main process as the same type whose message is
"Caught X in DataLoader worker process N. Original Traceback (most recent call last): ..." with the
worker's whole traceback in it; printed as ``error: {e}`` that is two tracebacks around one line.
:func:`plain_worker_errors` turns it back into the worker's exception type with the worker's own
message; both engines iterate their training and evaluation loaders inside it.
"""
import contextlib
import re
from typing import Optional

from ..checkpoints import checkpoint_note
from ..errors import DatasetError, UnreadableImageError

__all__ = ["data_error_stop", "original_message", "plain_worker_errors"]

_WRAPPED = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


def original_message(error: BaseException) -> Optional[str]:
    """The message the worker's exception had, or None when ``error`` is not a wrapped worker error."""
    text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    if not _WRAPPED.match(text):
        return None
    cls = type(error)
    names = [cls.__qualname__] if cls.__module__ == "builtins" else [f"{cls.__module__}.{cls.__qualname__}",
                                                                      cls.__qualname__]
    # The traceback's last entry is "module.Name: message" (format_exception_only), at column 0.
    for name in names:
        pos = text.rfind(f"\n{name}: ")
        if pos >= 0:
            return text[pos + len(name) + 3:].rstrip("\n")
        if text.rstrip("\n").endswith(f"\n{name}"):
            return ""
    return None


@contextlib.contextmanager
def plain_worker_errors():
    """Re-raise an exception from a DataLoader worker as its type with the worker's message, without
    the worker's traceback in the message (it is kept as a note: a printed traceback shows it, the
    one-line ``error:`` of tools/train_net.py does not)."""
    try:
        yield
    except Exception as e:
        message = original_message(e)
        if message is None:
            raise
        try:
            plain = type(e)(message)
        except Exception:
            plain = RuntimeError(message)
        if hasattr(plain, "add_note"):  # Python >= 3.11
            plain.add_note(str(e))
        raise plain from None


def data_error_stop(error: DatasetError, iteration: int, output_dir: str) -> DatasetError:
    """``error`` (a missing or unreadable image met by the training loader) as the error that stops
    training at ``iteration``: its message, the option to skip unreadable images, and the last checkpoint."""
    skip = (" Or skip unreadable images: MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES True."
            if isinstance(error, UnreadableImageError) else "")
    return type(error)(f"training stopped at iteration {iteration}: {error}.{skip} {checkpoint_note(output_dir)}")
