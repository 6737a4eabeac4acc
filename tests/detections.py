"""Two runs' detections of one image compared by content, never by position.

Detectors return their detections sorted by score. Two detections whose scores differ by float rounding
(1e-7 apart; another CPU's kernels, another thread count, ONNX Runtime against oneDNN) can come out in
either order, and which of several detections tied at the top-k cut or at the score threshold are kept is
arbitrary. A test that pairs the i-th detection of one run with the i-th of the other then fails on some
CPU (a 57 px "box difference" between two different objects). :func:`pair_detections` pairs by content:
same class, greedy by IoU, ties resolved by score then box, so the pairing depends on the detections only.
:func:`assert_same_detections` fails with what differs.

Accepted forms, each turned into boxes (K, 4) XYXY, scores (K,), 0-based classes (K,), masks (K, H, W) bool
or None: the torchvision engine's output dict (``labels`` 1-based, ``masks`` (K, 1, H, W)), an exported
detector's output (the same), detectron2 ``Instances`` (``pred_boxes``, ``scores``, ``pred_classes``,
``pred_masks``), :class:`resnet_backbones.Detections`, and one image's COCO results (a list of dicts with
``bbox`` XYWH, ``score``, ``category_id``, optional RLE ``segmentation``; :func:`coco_results_by_image`).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = ["as_detections", "coco_results_by_image", "pair_detections", "assert_same_detections", "Pairing"]


def as_detections(x) -> Dict[str, Optional[torch.Tensor]]:
    """One image's detections in any accepted form as {"boxes", "scores", "classes", "masks"}."""
    if isinstance(x, list):  # COCO results of one image
        boxes = torch.tensor([r["bbox"] for r in x], dtype=torch.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        masks = None
        if x and "segmentation" in x[0]:
            from pycocotools import mask as mask_util

            masks = torch.from_numpy(np.stack([mask_util.decode(r["segmentation"]) for r in x])).bool()
        return {"boxes": boxes, "scores": torch.tensor([r["score"] for r in x], dtype=torch.float64),
                "classes": torch.tensor([r["category_id"] for r in x], dtype=torch.int64), "masks": masks}
    if isinstance(x, dict) and "classes" in x:  # already read
        return x
    if isinstance(x, dict):  # torchvision engine / export: labels 1-based (0 is the background)
        masks = x.get("masks")
        if masks is not None:
            masks = (masks[:, 0] if masks.dim() == 4 else masks)
            masks = masks if masks.dtype == torch.bool else masks >= 0.5
        return {"boxes": x["boxes"].double(), "scores": x["scores"].double(), "classes": x["labels"].long() - 1,
                "masks": masks}
    if hasattr(x, "pred_boxes"):  # detectron2 Instances
        return {"boxes": x.pred_boxes.tensor.double(), "scores": x.scores.double(), "classes": x.pred_classes.long(),
                "masks": x.pred_masks if x.has("pred_masks") else None}
    if hasattr(x, "class_names"):  # resnet_backbones.Detections
        return {"boxes": x.boxes.double(), "scores": x.scores.double(), "classes": x.classes.long(), "masks": x.masks}
    raise TypeError(f"cannot read detections from {type(x).__name__}")


def coco_results_by_image(results: List[dict]) -> Dict[int, List[dict]]:
    """COCO results (``coco_instances_results.json``) grouped by image id, each image's list as given."""
    out: Dict[int, List[dict]] = {}
    for r in results:
        out.setdefault(int(r["image_id"]), []).append(r)
    return out


@dataclass
class Pairing:
    """The result of :func:`pair_detections`: index pairs (i in a, j in b), the unpaired indices of each,
    and the largest differences over the pairs (0 where there is no pair)."""

    pairs: List[Tuple[int, int]]
    unpaired_a: List[int]
    unpaired_b: List[int]
    box_diff: float = 0.0
    score_diff: float = 0.0
    min_iou: float = 1.0
    mask_mismatch: float = 0.0  # the largest fraction of one mask's image pixels that differ
    min_mask_iou: float = 1.0
    worst: Dict[str, str] = field(default_factory=dict)


def _order_key(d, i: int):
    """Score high to low, then the box: an order that does not depend on the list's order."""
    return (-float(d["scores"][i]),) + tuple(float(v) for v in d["boxes"][i])


def pair_detections(a, b, *, iou_min: float = 0.5) -> Pairing:
    """Pairs ``a``'s detections with ``b``'s of the same class: every candidate pair (IoU >= ``iou_min``)
    taken greedily by IoU, high to low; equal IoUs by the closer score, then by ``a``'s order of (score,
    box). A detector's per-class NMS leaves no two boxes of one class above its NMS IoU (0.5 or 0.7), so
    a detection and its counterpart moved by rounding pair with each other and with nothing else."""
    a, b = as_detections(a), as_detections(b)
    na, nb = len(a["scores"]), len(b["scores"])
    pairs: List[Tuple[int, int]] = []
    if na and nb:
        iou = box_iou(a["boxes"], b["boxes"])
        same = a["classes"][:, None] == b["classes"][None, :]
        rank_a = {i: r for r, i in enumerate(sorted(range(na), key=lambda i: _order_key(a, i)))}
        rank_b = {j: r for r, j in enumerate(sorted(range(nb), key=lambda j: _order_key(b, j)))}
        candidates = [(-float(iou[i, j]), abs(float(a["scores"][i] - b["scores"][j])), rank_a[i], rank_b[j], i, j)
                      for i, j in torch.nonzero(same & (iou >= iou_min)).tolist()]
        used_a, used_b = set(), set()
        for *_, i, j in sorted(candidates):
            i, j = int(i), int(j)
            if i not in used_a and j not in used_b:
                used_a.add(i)
                used_b.add(j)
                pairs.append((i, j))
    pairs.sort(key=lambda p: _order_key(a, p[0]))
    paired_a, paired_b = {i for i, _ in pairs}, {j for _, j in pairs}
    out = Pairing(pairs, [i for i in range(na) if i not in paired_a], [j for j in range(nb) if j not in paired_b])
    for i, j in pairs:
        box = float((a["boxes"][i] - b["boxes"][j]).abs().max())
        score = abs(float(a["scores"][i] - b["scores"][j]))
        pair_iou = float(box_iou(a["boxes"][i:i + 1], b["boxes"][j:j + 1])[0, 0])
        if box > out.box_diff:
            out.box_diff, out.worst["box"] = box, f"a[{i}] {a['boxes'][i].tolist()} vs b[{j}] {b['boxes'][j].tolist()}"
        if score > out.score_diff:
            out.score_diff, out.worst["score"] = score, f"a[{i}] {float(a['scores'][i]):.8f} vs b[{j}] " \
                                                        f"{float(b['scores'][j]):.8f}"
        out.min_iou = min(out.min_iou, pair_iou)
        if a["masks"] is not None and b["masks"] is not None:
            m, n = a["masks"][i], b["masks"][j]
            if m.shape != n.shape:
                out.mask_mismatch, out.min_mask_iou = 1.0, 0.0
                out.worst["mask"] = f"a[{i}] {tuple(m.shape)} vs b[{j}] {tuple(n.shape)}"
                continue
            differ = float((m != n).float().mean())
            union = int((m | n).sum())
            mask_iou = 1.0 if union == 0 else int((m & n).sum()) / union
            if differ > out.mask_mismatch:
                out.mask_mismatch, out.worst["mask"] = differ, f"a[{i}] vs b[{j}]: {differ:.2e} of the pixels"
            out.min_mask_iou = min(out.min_mask_iou, mask_iou)
    return out


def _describe(d, idx: List[int], limit: int = 5) -> str:
    rows = [f"class {int(d['classes'][i])} score {float(d['scores'][i]):.6f} box "
            f"{[round(v, 2) for v in d['boxes'][i].tolist()]}" for i in idx[:limit]]
    return "; ".join(rows) + (f"; ... ({len(idx)} in all)" if len(idx) > limit else "")


def assert_same_detections(a, b, *, box_atol: float, score_atol: float, mask_mismatch: Optional[float] = None,
                           mask_iou_min: Optional[float] = None, score_floor: float = 0.0,
                           limit: Optional[int] = None, min_count: int = 0, what: str = "") -> Pairing:
    """``a`` and ``b`` hold the same detections: every pair's box within ``box_atol`` px and score within
    ``score_atol``; masks (where both have them) differing on at most ``mask_mismatch`` of the pixels and/or
    with an IoU of at least ``mask_iou_min``.

    A detection may go unpaired only where keeping it was a coin toss: its score within ``score_atol`` of
    ``score_floor`` (the score threshold), or, where the other list is full (``limit`` detections, the
    top-k cut), within ``score_atol`` of that list's lowest score. ``min_count``: each list must have at
    least that many (a comparison of two empty lists proves nothing). Returns the pairing."""
    da, db = as_detections(a), as_detections(b)
    p = pair_detections(da, db)
    prefix = f"{what}: " if what else ""
    assert len(da["scores"]) >= min_count and len(db["scores"]) >= min_count, \
        f"{prefix}{len(da['scores'])} and {len(db['scores'])} detections, fewer than the {min_count} the test needs"

    def cut(other):
        n = len(other["scores"])
        return float(other["scores"].min()) if limit is not None and n >= limit and n else None

    for name, mine, other, idx in (("a", da, db, p.unpaired_a), ("b", db, da, p.unpaired_b)):
        floor = max(score_floor, cut(other) or score_floor)
        bad = [i for i in idx if float(mine["scores"][i]) > floor + score_atol]
        assert not bad, (f"{prefix}{len(bad)} detection(s) of {name} have no counterpart in the other list "
                         f"(none of the same class with IoU >= 0.5) and score above the cut {floor:.6f}: "
                         f"{_describe(mine, bad)}; unpaired in the other: "
                         f"{_describe(other, p.unpaired_b if name == 'a' else p.unpaired_a)}")
    assert p.box_diff <= box_atol, f"{prefix}boxes differ by {p.box_diff:.3g} px > {box_atol}: {p.worst['box']}"
    assert p.score_diff <= score_atol, f"{prefix}scores differ by {p.score_diff:.3g} > {score_atol}: {p.worst['score']}"
    if mask_mismatch is not None:
        assert p.mask_mismatch <= mask_mismatch, f"{prefix}masks differ: {p.worst.get('mask')} > {mask_mismatch}"
    if mask_iou_min is not None:
        assert p.min_mask_iou >= mask_iou_min, f"{prefix}mask IoU {p.min_mask_iou:.4f} < {mask_iou_min}"
    return p
