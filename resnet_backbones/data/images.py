"""Reading an image file, as detectron2's ``read_image`` reads it; both engines' unreadable-image errors
come from here."""
import numpy as np
from PIL import Image, ImageOps

from ..errors import DatasetError, UnreadableImageError

__all__ = ["read_image"]


def read_image(path: str, json_file: str = "") -> np.ndarray:
    """An image file as a (H, W, 3) uint8 RGB array, as detectron2's ``read_image`` reads it (EXIF
    orientation applied, grey and palette images converted). Both engines' unreadable-image errors
    come from here.

    Raises:
        DatasetError: the file does not exist; :class:`UnreadableImageError`: it does not decode.
    """
    listed = f" listed in {json_file}" if json_file else ""
    try:
        with Image.open(path) as im:
            return np.array(ImageOps.exif_transpose(im).convert("RGB"))
    except FileNotFoundError as e:
        raise DatasetError(f"image {path}{listed} does not exist") from e
    except Exception as e:
        fix = f"replace it or remove it from {json_file}" if json_file else "replace it"
        raise UnreadableImageError(f"cannot read image {path} ({type(e).__name__}: {e}); the file is corrupt or "
                                   f"not an image: {fix}") from e
