"""COCO evaluation (pycocotools) of a torchvision-engine model: bbox AP, and segm AP with masks."""
import contextlib
import io
import itertools
import json
import logging
import os
import time
from typing import Dict, List

import numpy as np
import torch
from pycocotools import mask as mask_util
from pycocotools.cocoeval import COCOeval

from ..data import COCOInstances, InferenceSampler, collate
from ..data.loader_errors import plain_worker_errors
from .distributed import all_gather, get_rank, get_world_size, is_main_process

__all__ = ["inference_on_dataset", "coco_evaluate", "format_table", "METRICS"]

logger = logging.getLogger(__name__)
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def _to_coco(output: Dict[str, torch.Tensor], image_id: int, category_ids: List[int]) -> List[dict]:
    boxes = output["boxes"].float().cpu().numpy().copy()  # a CPU float32 tensor's numpy() shares its memory
    if not len(boxes):
        return []
    boxes[:, 2:] -= boxes[:, :2]
    scores = output["scores"].float().cpu().tolist()
    labels = output["labels"].cpu().tolist()
    rles = None
    if "masks" in output:
        masks = output["masks"][:, 0]  # bool, pasted as detectron2's paste_masks_in_image (>= 0.5)
        binary = (masks if masks.dtype == torch.bool else masks >= 0.5).cpu().numpy().astype(np.uint8)
        rles = [mask_util.encode(np.asfortranarray(m)) for m in binary]
        for r in rles:
            r["counts"] = r["counts"].decode("ascii")
    results = []
    for k in range(len(boxes)):
        r = {"image_id": image_id, "category_id": category_ids[labels[k] - 1], "bbox": boxes[k].tolist(),
             "score": scores[k]}
        if rles is not None:
            r["segmentation"] = rles[k]
        results.append(r)
    return results


@torch.no_grad()
def inference_on_dataset(model, dataset: COCOInstances, device: torch.device, *, num_workers: int = 0,
                         log_period: int = 50) -> List[dict]:
    """Run ``model`` over this rank's shard of ``dataset``; returns every rank's COCO results on rank 0."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, sampler=InferenceSampler(len(dataset), get_rank(),
                                         get_world_size()), num_workers=num_workers, collate_fn=collate)
    was_training = model.training
    model.eval()
    results: List[dict] = []
    start = time.perf_counter()
    total = len(loader)
    with plain_worker_errors():  # a worker's error with its own message (an unreadable image names the file)
        for i, (images, targets) in enumerate(loader):
            outputs = model(list(images))  # the transform resizes on the CPU and moves them to the device
            for out, target in zip(outputs, targets):
                results.extend(_to_coco(out, int(target["image_id"]), dataset.category_ids))
            if is_main_process() and ((i + 1) % log_period == 0 or i + 1 == total):
                per = (time.perf_counter() - start) / (i + 1)
                logger.info("Inference done %d/%d. %.3f s/img (%.1f img/s). ETA=%.0f s", i + 1, total, per,
                            1 / per, per * (total - i - 1))
    model.train(was_training)
    gathered = all_gather(results)
    return list(itertools.chain(*gathered)) if is_main_process() else []


def coco_evaluate(dataset: COCOInstances, results: List[dict], iou_types: List[str]) -> Dict[str, Dict[str, float]]:
    """COCOeval per IoU type; returns {iou_type: {AP, AP50, AP75, APs, APm, APl, AP-<class>}} in percent."""
    out: Dict[str, Dict[str, float]] = {}
    for iou_type in iou_types:
        if not results:
            logger.warning("no predictions: %s AP is 0", iou_type)
            out[iou_type] = {m: 0.0 for m in METRICS}
            continue
        # As detectron2's COCOEvaluator: segm results carry no box, so that pycocotools takes each
        # detection's area (small/medium/large) from its mask, not its box.
        dets = [{k: v for k, v in r.items() if not (iou_type == "segm" and k == "bbox")} for r in results]
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = dataset.coco.loadRes(dets)
            ev = COCOeval(dataset.coco, coco_dt, iou_type)
            ev.params.imgIds = dataset.image_ids
            ev.evaluate()
            ev.accumulate()
        with contextlib.redirect_stdout(io.StringIO()) as captured:
            ev.summarize()
        logger.info("COCOeval %s:\n%s", iou_type, captured.getvalue().rstrip())
        # COCOeval reports -1 where no ground truth exists (e.g. no large objects): NaN, as detectron2.
        stats = {m: float(ev.stats[i] * 100) if ev.stats[i] >= 0 else float("nan") for i, m in enumerate(METRICS)}
        precisions = ev.eval["precision"]  # (iou, recall, class, area, max_dets)
        for k, (cat, name) in enumerate(zip(dataset.category_ids, dataset.class_names)):
            p = precisions[:, :, k, 0, -1]
            p = p[p > -1]
            stats[f"AP-{name}"] = float(p.mean() * 100) if p.size else float("nan")
        out[iou_type] = stats
    return out


def format_table(iou_type: str, stats: Dict[str, float]) -> str:
    """detectron2's markdown table of the six COCO metrics."""
    head = "|   " + "   |   ".join(METRICS) + "   |"
    sep = "|" + "|".join(":" + "-" * (len(m) + 4) + ":" for m in METRICS) + "|"
    row = "|" + "|".join(f"{stats[m]:.3f}".center(len(m) + 6) for m in METRICS) + "|"
    return f"Evaluation results for {iou_type}:\n{head}\n{sep}\n{row}"


def format_per_class_table(iou_type: str, stats: Dict[str, float]) -> str:
    """The per-category AP as detectron2's COCOEvaluator logs it: (category, AP) pairs, three to a row,
    named as the json names the categories."""
    pairs = [(k[3:], v) for k, v in stats.items() if k.startswith("AP-")]
    cols = min(3, len(pairs)) or 1
    width = max([len("category")] + [len(n) for n, _ in pairs])
    head = "| " + " | ".join(f"{'category':<{width}} | AP    " for _ in range(cols)) + " |"
    sep = "|" + "|".join(f":{'-' * (width + 1)}|:{'-' * 7}" for _ in range(cols)) + "|"
    rows = []
    for i in range(0, len(pairs), cols):
        cells = [f"{n:<{width}} | {v:<6.3f}" for n, v in pairs[i:i + cols]]
        cells += [f"{'':<{width}} | {'':<6}"] * (cols - len(cells))
        rows.append("| " + " | ".join(cells) + " |")
    return f"Per-category {iou_type} AP:\n" + "\n".join([head, sep] + rows)


def save_results(results: List[dict], output_dir: str) -> str:
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "coco_instances_results.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f)
    os.replace(tmp, path)
    return path
