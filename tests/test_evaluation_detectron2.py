"""The torchvision engine's evaluation reports what detectron2's COCOEvaluator reports, per category too
(needs detectron2).

A user's own COCO folder (tests/own_data.py: category ids 5, 9, 11, listed 11, 5, 9 in the json) and a
fixed set of detections made from its ground truth (boxes and masks moved, some given the wrong class,
some missed, false positives added; each class treated differently, so that each has its own AP) go
through both engines' evaluation as users run it: the torchvision engine's ``evaluate`` (its inference
loop over a stand-in detector that returns those detections, the class index -> category id mapping,
``coco_evaluate``, the logged per-category table) and detectron2's ``COCOEvaluator`` on the dataset
registered with detectron2's ``register_coco_instances`` (``process`` with ``Instances``, ``evaluate``).
Every number must be equal: AP, AP50, AP75, APs, APm, APl and each "AP-<category>", bbox and segm, and the
per-category tables must list the same categories in the same order with the same values.
"""
import hashlib
import logging
import math
import os
import sys

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

pytest.importorskip("detectron2")
pytest.importorskip("detectron2.evaluation")

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.datasets import register_coco_instances as d2_register_coco_instances  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402

from resnet_backbones.config import load_config  # noqa: E402
from resnet_backbones.data import COCOInstances, get_dataset  # noqa: E402
from resnet_backbones.tv.evaluate import METRICS  # noqa: E402
from resnet_backbones.tv.train import evaluate as tv_evaluate  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from own_data import CLASS_NAMES, USER_NAMES, write_coco_folder  # noqa: E402

MASK_QUICK = "quick_schedules/mask_rcnn_R18_synthetic.yaml"
NUM_VAL = 12


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_coco_folder(str(tmp_path_factory.mktemp("eval_data")), num_train=1, num_val=NUM_VAL)


def _image_key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest()


def _detections(folder):
    """{image_id: one image's detections in the torchvision engine's output form (labels 1-based in the
    model's class order: category ids sorted), as float32 tensors}, made from the ground truth:

    - disc (id 5): every instance found, boxes moved by ~2 px;
    - box (id 9): boxes moved by ~5 px, a third of them reported as wedge;
    - wedge (id 11): 40 % missed, boxes moved by ~3 px;
    - two false positives per image of random classes.
    Masks are the instances' masks shifted by the box's move (so mask and box IoUs differ)."""
    coco = COCO(os.path.join(folder, "val.json"))
    cat_ids = sorted(coco.getCatIds())
    assert [USER_NAMES[c] for c in cat_ids] == CLASS_NAMES
    rng = np.random.default_rng(7)
    out = {}
    for image_id in sorted(coco.getImgIds()):
        info = coco.imgs[image_id]
        h, w = info["height"], info["width"]
        boxes, labels, scores, masks = [], [], [], []
        for ann in coco.imgToAnns[image_id]:
            name = USER_NAMES[ann["category_id"]]
            if name == "wedge" and rng.uniform() < 0.4:
                continue  # missed
            label = cat_ids.index(ann["category_id"]) + 1
            if name == "box" and rng.uniform() < 1 / 3:
                label = cat_ids.index(11) + 1  # the wrong class
            sigma = {"disc": 2.0, "box": 5.0, "wedge": 3.0}[name]
            dx, dy = rng.normal(0, sigma, 2)
            x, y, bw, bh = ann["bbox"]
            dw, dh = rng.normal(0, sigma / 2, 2)
            boxes.append([x + dx, y + dy, x + bw + dx + dw, y + bh + dy + dh])
            labels.append(label)
            scores.append(rng.uniform(0.3, 1.0))
            mask = torch.from_numpy(coco.annToMask(ann)).bool()
            masks.append(torch.roll(mask, shifts=(int(round(dy)), int(round(dx))), dims=(0, 1)))
        for _ in range(2):  # false positives
            x0, y0 = rng.uniform(0, w - 30), rng.uniform(0, h - 30)
            x1, y1 = x0 + rng.uniform(10, 30), y0 + rng.uniform(10, 30)
            boxes.append([x0, y0, x1, y1])
            labels.append(int(rng.integers(1, len(cat_ids) + 1)))
            scores.append(rng.uniform(0.05, 0.8))
            mask = torch.zeros((h, w), dtype=torch.bool)
            mask[int(y0):int(y1), int(x0):int((x0 + x1) / 2)] = True
            masks.append(mask)
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        b[:, 0::2] = b[:, 0::2].clamp(0, w)
        b[:, 1::2] = b[:, 1::2].clamp(0, h)
        order = torch.argsort(torch.tensor(scores), descending=True)  # a detector's order
        out[image_id] = {"boxes": b[order], "scores": torch.tensor(scores, dtype=torch.float32)[order],
                         "labels": torch.tensor(labels, dtype=torch.int64)[order],
                         "masks": torch.stack(masks)[order][:, None]}
    return out


class _FixedDetector(torch.nn.Module):
    """A stand-in detector: for each image it is given, the fixed detections of that image (found by its
    pixels: the torchvision engine's evaluation gives the model images, not ids)."""

    def __init__(self, by_key):
        super().__init__()
        self.by_key = by_key
        self.calls = 0

    def forward(self, images):
        self.calls += len(images)
        # Fresh tensors each call, as a detector returns them.
        return [{k: v.clone() for k, v in self.by_key[_image_key(image)].items()} for image in images]


def _table_rows(text: str, iou_type: str):
    """(category, AP as printed) of the first "Per-category <iou_type> AP" table in ``text``, row by row."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"Per-category {iou_type} AP")) + 1
    pairs = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "category" or cells[0].startswith((":", "-")):
            continue
        pairs += [(n, v) for n, v in zip(cells[0::2], cells[1::2]) if n]
    return pairs


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9


def test_per_category_ap_equals_detectron2_coco_evaluator(folder, tmp_path, caplog):
    """bbox and segm: the torchvision engine's ``evaluate`` and detectron2's ``COCOEvaluator`` on the same
    detections give equal AP, AP50, AP75, APs, APm, APl and AP-<category> for every category (in the same
    order), and the logged per-category tables list the same (category, AP) pairs in the same order.
    Fails if the engine mislabels or permutes the per-category table, maps a class index to the wrong
    category id, evaluates the wrong images, or takes segm areas from boxes."""
    caplog.set_level(logging.INFO)
    detections = _detections(folder)
    cfg = load_config(MASK_QUICK, ["DATASETS.TRAIN", '("my_val",)', "DATASETS.TEST", '("my_val",)',
                                   "OUTPUT_DIR", str(tmp_path), "DATALOADER.NUM_WORKERS", "0"], use_detectron2=False,
                      datasets=[("my_val", os.path.join(folder, "val.json"), os.path.join(folder, "val"))])
    dataset = COCOInstances(get_dataset("my_val", cfg))
    by_key = {_image_key(dataset[i][0]): detections[image_id] for i, image_id in enumerate(dataset.image_ids)}
    assert len(by_key) == NUM_VAL == len(detections)
    model = _FixedDetector(by_key)

    # The torchvision engine, as its training's final evaluation and --eval-only run it.
    ours = tv_evaluate(cfg, model, torch.device("cpu"))
    assert model.calls == NUM_VAL
    our_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("resnet_backbones"))
    caplog.clear()

    # detectron2's COCOEvaluator on the same detections, the dataset registered as detectron2 users do.
    name = "rb_eval_equivalence_val"
    if name in DatasetCatalog.list():  # from an earlier run in this process, with another folder
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    d2_register_coco_instances(name, {}, os.path.join(folder, "val.json"), os.path.join(folder, "val"))
    DatasetCatalog.get(name)  # load_coco_json sets thing_classes and the category id mapping
    assert MetadataCatalog.get(name).thing_classes == CLASS_NAMES
    evaluator = COCOEvaluator(name, output_dir=None)
    evaluator.reset()
    coco = COCO(os.path.join(folder, "val.json"))
    for image_id, det in detections.items():
        info = coco.imgs[image_id]
        inst = Instances((info["height"], info["width"]), pred_boxes=Boxes(det["boxes"].clone()),
                         scores=det["scores"].clone(), pred_classes=det["labels"] - 1, pred_masks=det["masks"][:, 0])
        evaluator.process([{"image_id": image_id, "height": info["height"], "width": info["width"]}],
                          [{"instances": inst}])
    theirs = evaluator.evaluate()

    assert set(ours) == set(theirs) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        per_category = [k for k in theirs[task] if k.startswith("AP-")]
        assert per_category == [f"AP-{n}" for n in CLASS_NAMES]  # detectron2: thing_classes, by category id
        mine = [k for k in ours[task] if k.startswith("AP-")]
        assert mine == per_category, f"{task}: the torchvision engine reports {mine}, detectron2 {per_category}"
        for metric in METRICS + per_category:
            a, b = ours[task][metric], theirs[task][metric]
            assert _same(a, b), f"{task} {metric}: torchvision engine {a}, detectron2 {b}"
        # The detections give each category its own AP: a permuted table cannot pass by coincidence.
        values = [round(theirs[task][k], 6) for k in per_category]
        assert len(set(values)) == len(values) and all(0 < v < 100 for v in values), (task, values)

        # detectron2's table as COCOEvaluator._derive_coco_results prints it: its AP-<name> results in order,
        # "%.3f" (built from the results, not read from its log: a trainer that ran earlier in this process
        # may have set detectron2's logger up to print to stdout only, out of caplog's reach).
        mine = _table_rows(our_log, task)
        ref = [(k[3:], f"{v:.3f}") for k, v in theirs[task].items() if k.startswith("AP-")]
        assert [n for n, _ in ref] == CLASS_NAMES, ref
        assert mine == ref, f"{task}: our table {mine}, detectron2's {ref}"
