"""The checks a COCO instances json and its image folder pass before a dataset is used.

:func:`validate_coco` is the one validation of both engines: :func:`resnet_backbones.data.get_dataset`
runs it on every dataset it resolves (training and test sets, synthetic, variants, COCO, and those of
``register_coco_instances``), and both engines resolve their datasets through it before the first
iteration. :func:`check_images` decodes every image (``tools/check_dataset.py``): only decoding
finds a truncated file, and that takes minutes on COCO, so it is a tool, not a step of every run.
"""
import json
import logging
import math
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Optional, Tuple


from ..errors import DatasetError, DatasetValidationError
from .images import read_image

__all__ = ["ValidationReport", "check_images", "validate_coco"]

logger = logging.getLogger(__name__)

# Offenders named per kind of problem in the message (the count is always complete).
SHOWN = 5

# kind -> what it means, for the message. Problems stop the run; drops are logged once.
PROBLEMS = OrderedDict([
    ("malformed_image", "image entries without an integer id, a file_name, a width or a height"),
    ("duplicate_image_id", "image ids listed more than once"),
    ("missing_file", "listed images missing on disk"),
    ("unknown_category", "annotations whose category_id is not a category of the json"),
    ("unknown_image", "annotations whose image_id is not an image of the json"),
    ("duplicate_annotation_id", "annotation ids used more than once (detectron2's load_coco_json refuses them)"),
    ("bad_bbox", "annotations whose bbox is not four finite numbers"),
])
DROPS = OrderedDict([
    ("short_polygon", "polygons of fewer than 3 points (dropped, as detectron2's load_coco_json drops them)"),
    ("no_valid_polygon", "instances left without a polygon of 3 points (dropped, as load_coco_json drops them)"),
    ("degenerate_bbox", "boxes of zero or negative width or height (dropped from the training targets, as "
                        "detectron2's filter_empty_instances drops them)"),
])


@dataclass
class ValidationReport:
    """What :func:`validate_coco` found in one json: ``problems`` and ``drops`` map a kind (keys of
    :data:`PROBLEMS` / :data:`DROPS`) to its count and its first :data:`SHOWN` offenders (text)."""
    json_file: str
    image_root: str
    num_images: int = 0
    num_annotations: int = 0
    num_categories: int = 0
    problems: Dict[str, Tuple[int, List[str]]] = field(default_factory=dict)
    drops: Dict[str, Tuple[int, List[str]]] = field(default_factory=dict)

    def _add(self, table: dict, kind: str, offender: str) -> None:
        count, shown = table.get(kind, (0, []))
        if len(shown) < SHOWN:
            shown.append(offender)
        table[kind] = (count + 1, shown)

    def problem(self, kind: str, offender: str) -> None:
        self._add(self.problems, kind, offender)

    def drop(self, kind: str, offender: str) -> None:
        self._add(self.drops, kind, offender)

    @staticmethod
    def _lines(table: dict, meaning: dict) -> List[str]:
        return [f"{count} {meaning[kind]}: {'; '.join(shown)}{'; ...' if count > len(shown) else ''}"
                for kind, (count, shown) in ((k, table[k]) for k in meaning if k in table)]

    def error_message(self, name: str) -> str:
        total = sum(c for c, _ in self.problems.values())
        drops = self._lines(self.drops, DROPS)
        return (f"dataset {name!r} ({self.json_file}, images in {self.image_root}) has {total} problem(s); "
                "nothing was trained or evaluated:\n  " + "\n  ".join(self._lines(self.problems, PROBLEMS))
                + ("\nAlso (not errors): " + "\n  ".join(drops) if drops else "")
                + f"\nFix the json or the files (python tools/check_dataset.py {name} checks a dataset "
                "without training).")

    def drops_message(self, name: str) -> Optional[str]:
        if not self.drops:
            return None
        return (f"dataset {name!r} ({self.json_file}): " + "; ".join(self._lines(self.drops, DROPS)))


def _where(image: Optional[dict], ann: dict) -> str:
    file = f", file {image['file_name']}" if image and isinstance(image.get("file_name"), str) else ""
    return f"annotation {ann.get('id')} (image id {ann.get('image_id')}{file})"


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check(json_file: str, image_root: str) -> ValidationReport:
    report = ValidationReport(json_file, image_root)
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read annotations {json_file}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("categories"), list):
        raise DatasetError(f"{json_file} is not a COCO instances json: it needs lists 'images' and 'categories'")
    images: Dict[int, dict] = {}
    for img in data["images"]:
        if not isinstance(img, dict) or not isinstance(img.get("id"), int) or not isinstance(img.get("file_name"), str) \
                or not all(isinstance(img.get(k), int) for k in ("width", "height")):
            report.problem("malformed_image", json.dumps(img)[:120])
            continue
        if img["id"] in images:
            report.problem("duplicate_image_id", f"image id {img['id']} ({img['file_name']})")
            continue
        images[img["id"]] = img
        if not os.path.isfile(os.path.join(image_root, img["file_name"])):
            report.problem("missing_file", f"{os.path.join(image_root, img['file_name'])} (image id {img['id']})")
    report.num_images = len(images)
    categories = {c.get("id") for c in data["categories"] if isinstance(c, dict)}
    report.num_categories = len(categories)
    annotations = data.get("annotations") or []
    report.num_annotations = len(annotations)
    seen_ids = set()
    for ann in annotations:
        image = images.get(ann.get("image_id"))
        where = _where(image, ann)
        if ann.get("id") in seen_ids:
            report.problem("duplicate_annotation_id", where)
        seen_ids.add(ann.get("id"))
        if ann.get("category_id") not in categories:
            report.problem("unknown_category", f"{where}: category_id {ann.get('category_id')!r}")
        if image is None:
            report.problem("unknown_image", where)
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            report.problem("bad_bbox", f"{where}: bbox {bbox!r}")
        elif bbox[2] <= 0 or bbox[3] <= 0:
            report.drop("degenerate_bbox", f"{where}: bbox {bbox}")
        seg = ann.get("segmentation")
        if isinstance(seg, list) and seg:
            valid = 0
            for poly in seg:
                if isinstance(poly, list) and len(poly) % 2 == 0 and len(poly) >= 6:
                    valid += 1
                else:
                    report.drop("short_polygon", f"{where}: {len(poly) // 2 if isinstance(poly, list) else 0} point(s)")
            if not valid:
                report.drop("no_valid_polygon", where)
    return report


@lru_cache(maxsize=32)
def _validated(json_file: str, image_root: str, mtime_ns: int, size: int, name: str) -> ValidationReport:
    # Cached by the json's stat: the torchvision engine resolves a dataset several times in a run
    # (the early check, the trainer, each evaluation), and COCO's train json takes seconds to read.
    report = _check(json_file, image_root)
    if report.problems:
        raise DatasetValidationError(report.error_message(name))
    message = report.drops_message(name)
    if message:
        logger.warning(message)  # once per json and process (the cache)
    return report


def validate_coco(json_file: str, image_root: str, name: str = "") -> ValidationReport:
    """Check a COCO instances json against itself and its image folder; raise on any problem.

    Problems (:data:`PROBLEMS`: a listed file missing, a ``category_id`` that is no category, an
    ``image_id`` that is no image, a bbox that is not four finite numbers, ...) raise one
    :class:`DatasetValidationError` naming the json, each kind's count and its first offenders
    (file, image id, annotation id). What detectron2 drops without stopping (:data:`DROPS`: short
    polygons, degenerate boxes) is counted and logged once as a warning. Every listed file is
    stat-ed, none decoded (:func:`check_images` decodes). Cached per json (path, mtime, size).
    """
    st = os.stat(json_file)
    return _validated(os.path.abspath(json_file), os.path.abspath(image_root), st.st_mtime_ns, st.st_size,
                      name or os.path.basename(json_file))


def _decode(job: Tuple[str, int, int]) -> Optional[str]:
    path, width, height = job
    try:
        array = read_image(path)
    except DatasetError as e:
        return str(e)
    if array.shape[:2] != (height, width):
        return f"image {path} is {array.shape[1]}x{array.shape[0]} but the json says {width}x{height}"
    return None


def check_images(json_file: str, image_root: str, *, workers: int = 0, progress: bool = True) -> List[str]:
    """Decode every image of a COCO json in ``workers`` threads (0: one per CPU) with a tqdm progress
    bar; returns one message per image that is missing, does not decode, or whose size differs from
    the json's (empty: all good). PIL releases the GIL while decoding, so threads scale."""
    from tqdm import tqdm

    with open(json_file) as f:
        images = json.load(f)["images"]
    jobs = [(os.path.join(image_root, im["file_name"]), im["width"], im["height"]) for im in images]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = list(tqdm(pool.map(_decode, jobs), total=len(jobs), disable=not progress,
                            desc=f"decoding {os.path.basename(json_file)}", unit="img"))
    return [r for r in results if r is not None]
