"""The pieces that make torchvision's (Mask) R-CNN compute what detectron2 computes.

Each class or function here replaces one torchvision behaviour that differs from detectron2's and
names, in its docstring, the detectron2 function it matches (detectron2 commit 02b5c4e). They are
tested against those functions in ``tests/test_engine_equivalence.py`` (where detectron2 is installed).
Nothing here imports detectron2.

Tensor layouts stay torchvision's (background is class 0 of the box predictor, the mask predictor
has a background channel) so that torchvision's own heads can be reused; the detector checkpoint
converter (:mod:`resnet_backbones.weights.detector`) moves the rows.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from fvcore.nn import weight_init
from PIL import Image
from pycocotools import mask as mask_util
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image

from .roi_align import roi_align  # torchvision's, with its CPU backward on every thread

__all__ = [
    "Detectron2AnchorGenerator",
    "Detectron2RPN",
    "Detectron2ROIHeads",
    "Detectron2Transform",
    "MultiLevelRoIAlign",
    "init_heads_like_detectron2",
    "mask_targets_like_detectron2",
    "paste_masks_like_detectron2",
    "resize_like_detectron2",
    "resized_shape_like_detectron2",
]


# --- anchors -------------------------------------------------------------------------------------
class Detectron2AnchorGenerator(nn.Module):
    """detectron2's ``DefaultAnchorGenerator`` (modeling/anchor_generator.py).

    Differences from torchvision's ``AnchorGenerator`` that this removes: cell anchors are float
    (torchvision rounds them to integers), ordered size-major then aspect ratio (as detectron2's
    ``generate_cell_anchors``, which the RPN head's channel order depends on), the stride of each
    level is the backbone's declared stride (torchvision derives it as padded image size // grid size,
    e.g. 61 instead of 64 for P6 of a 1216-px-wide padded image), and the grid starts at
    ``offset * stride`` (MODEL.ANCHOR_GENERATOR.OFFSET).
    """

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]],
                 strides: Sequence[int], offset: float = 0.0):
        super().__init__()
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"anchor offset {offset} must be in [0, 1)")
        if len(sizes) != len(strides) or len(aspect_ratios) != len(strides):
            raise ValueError("one list of sizes and of aspect ratios per level")
        self.strides = list(strides)
        self.offset = offset
        for i, (s, r) in enumerate(zip(sizes, aspect_ratios)):
            self.register_buffer(f"cell_anchors_{i}", self.cell_anchors(s, r), persistent=False)

    @staticmethod
    def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
        """(len(sizes) * len(aspect_ratios), 4) XYXY anchors centred at 0; ratio = height / width."""
        out = []
        for size in sizes:
            area = float(size) ** 2
            for ratio in aspect_ratios:
                w = math.sqrt(area / ratio)
                h = ratio * w
                out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(out, dtype=torch.float32)

    def num_anchors_per_location(self) -> List[int]:
        return [len(getattr(self, f"cell_anchors_{i}")) for i in range(len(self.strides))]

    def grid_anchors(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """Per level a (Hi * Wi * A, 4) tensor: location-major (row-major grid), anchor-minor."""
        anchors = []
        for i, (feature, stride) in enumerate(zip(features, self.strides)):
            base = getattr(self, f"cell_anchors_{i}").to(feature.device)
            h, w = feature.shape[-2:]
            xs = torch.arange(self.offset * stride, w * stride, step=stride, dtype=torch.float32, device=feature.device)
            ys = torch.arange(self.offset * stride, h * stride, step=stride, dtype=torch.float32, device=feature.device)
            sy, sx = torch.meshgrid(ys, xs, indexing="ij")
            sx, sy = sx.reshape(-1), sy.reshape(-1)
            shifts = torch.stack((sx, sy, sx, sy), dim=1)
            anchors.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return anchors

    def forward(self, image_list: ImageList, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """torchvision's interface: one (sum_i Hi * Wi * A, 4) tensor per image."""
        all_levels = torch.cat(self.grid_anchors(features))
        return [all_levels for _ in range(len(image_list.image_sizes))]


# --- RPN -----------------------------------------------------------------------------------------
class Detectron2RPN(RegionProposalNetwork):
    """torchvision's RPN (its head, matcher, sampler and box coder) computing detectron2's ``RPN``
    (modeling/proposal_generator/rpn.py):

    - proposals as ``find_top_rpn_proposals``: top-k per level on the objectness *logits*, clip,
      drop boxes not wider/taller than MODEL.PROPOSAL_GENERATOR.MIN_SIZE, NMS per level on logits,
      the first POST_NMS_TOPK per image (torchvision ranks on sigmoid probabilities, which tie at
      1.0 for logits >= 16.7 in float32, and drops boxes < 1e-3 px);
    - anchor labels as ``label_and_sample_anchors`` (RPN.BOUNDARY_THRESH honoured), losses as
      ``RPN.losses``: smooth-L1 with SMOOTH_L1_BETA, both normalised by BATCH_SIZE_PER_IMAGE x images,
      LOSS_WEIGHT and BBOX_REG_LOSS_WEIGHT, detectron2's loss names;
    - box deltas decoded in float32 (detectron2's ``apply_deltas``), also under autocast.
    """

    def __init__(self, anchor_generator: Detectron2AnchorGenerator, head: nn.Module, *, in_features: List[str],
                 iou_thresholds: Tuple[float, float], batch_size_per_image: int, positive_fraction: float,
                 pre_nms_topk: Dict[str, int], post_nms_topk: Dict[str, int], nms_thresh: float,
                 min_box_size: float, boundary_thresh: float, smooth_l1_beta: float, loss_weight: float,
                 bbox_loss_weight: float, bbox_reg_weights: Tuple[float, float, float, float]):
        super().__init__(anchor_generator, head, fg_iou_thresh=iou_thresholds[1], bg_iou_thresh=iou_thresholds[0],
                         batch_size_per_image=batch_size_per_image, positive_fraction=positive_fraction,
                         pre_nms_top_n=pre_nms_topk, post_nms_top_n=post_nms_topk, nms_thresh=nms_thresh)
        self.box_coder = det_utils.BoxCoder(weights=tuple(bbox_reg_weights))
        self.in_features = list(in_features)
        self.min_box_size = min_box_size
        self.boundary_thresh = boundary_thresh
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_weight, self.bbox_loss_weight = loss_weight, bbox_loss_weight

    def predict(self, features: Dict[str, torch.Tensor]):
        """Head outputs in detectron2's layout: logits per level (N, Hi*Wi*A), deltas (N, Hi*Wi*A, 4),
        and anchors per level (Hi*Wi*A, 4)."""
        feats = [features[f] for f in self.in_features]
        objectness, deltas = self.head(feats)
        n = feats[0].shape[0]
        logits = [o.permute(0, 2, 3, 1).flatten(1) for o in objectness]
        deltas = [d.view(n, -1, 4, d.shape[-2], d.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2) for d in deltas]
        return logits, deltas, self.anchor_generator.grid_anchors(feats)

    @torch.no_grad()
    def label_anchors(self, anchors: torch.Tensor, targets, image_sizes) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per image labels (1 fg, 0 bg, -1 ignored; sampled) and matched gt boxes, stacked (N, R), (N, R, 4)."""
        labels, matched = [], []
        for t, (h, w) in zip(targets, image_sizes):
            gt = t["boxes"]
            if gt.numel() == 0:
                lab = torch.zeros(len(anchors), dtype=torch.float32, device=anchors.device)
                m = torch.zeros_like(anchors)
            else:
                idx = self.proposal_matcher(box_iou(gt, anchors))
                lab = (idx >= 0).to(torch.float32)
                lab[idx == self.proposal_matcher.BETWEEN_THRESHOLDS] = -1.0
                m = gt[idx.clamp(min=0)]
            if self.boundary_thresh >= 0:
                b = self.boundary_thresh
                inside = (anchors[:, 0] >= -b) & (anchors[:, 1] >= -b) & (anchors[:, 2] < w + b) & (anchors[:, 3] < h + b)
                lab[~inside] = -1.0
            pos, neg = self.fg_bg_sampler([lab])
            sampled = torch.full_like(lab, -1.0)
            sampled[pos[0].bool()] = 1.0
            sampled[neg[0].bool()] = 0.0
            labels.append(sampled)
            matched.append(m)
        return torch.stack(labels), torch.stack(matched)

    def losses(self, anchors: torch.Tensor, logits: torch.Tensor, deltas: torch.Tensor, labels: torch.Tensor,
               matched: torch.Tensor) -> Dict[str, torch.Tensor]:
        fg = labels == 1
        targets = torch.stack([self.box_coder.encode_single(m, anchors) for m in matched])
        loc = F.smooth_l1_loss(deltas[fg].float(), targets[fg], beta=self.smooth_l1_beta, reduction="sum")
        valid = labels >= 0
        cls = F.binary_cross_entropy_with_logits(logits[valid].float(), labels[valid], reduction="sum")
        normalizer = self.fg_bg_sampler.batch_size_per_image * labels.shape[0]
        return {"loss_rpn_cls": cls / normalizer * self.loss_weight,
                "loss_rpn_loc": loc / normalizer * self.loss_weight * self.bbox_loss_weight}

    @torch.no_grad()
    def find_top_proposals(self, anchors: List[torch.Tensor], logits: List[torch.Tensor], deltas: List[torch.Tensor],
                           image_sizes: List[Tuple[int, int]]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """detectron2's ``find_top_rpn_proposals``: returns boxes and their logits per image."""
        n = logits[0].shape[0]
        pre, post = self._pre_nms_top_n[self.mode], self._post_nms_top_n[self.mode]
        top_boxes, top_scores, level_ids = [], [], []
        for level, (a, lg, d) in enumerate(zip(anchors, logits, deltas)):
            k = min(lg.shape[1], pre)
            scores, idx = lg.topk(k, dim=1)
            boxes = self.box_coder.decode_single(d.reshape(-1, 4).float(), a.repeat(n, 1)).view(n, -1, 4)
            top_boxes.append(boxes[torch.arange(n, device=lg.device)[:, None], idx])
            top_scores.append(scores)
            level_ids.append(torch.full((k,), level, dtype=torch.int64, device=lg.device))
        top_boxes, top_scores, level_ids = torch.cat(top_boxes, 1), torch.cat(top_scores, 1), torch.cat(level_ids)
        out_boxes, out_scores = [], []
        for i, size in enumerate(image_sizes):
            boxes, scores, lvl = top_boxes[i], top_scores[i], level_ids
            valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
            if not valid.all():
                if self.training:
                    raise FloatingPointError("Predicted boxes or scores contain Inf/NaN. Training has diverged.")
                boxes, scores, lvl = boxes[valid], scores[valid], lvl[valid]
            boxes = clip_boxes_to_image(boxes, size)
            keep = ((boxes[:, 2] - boxes[:, 0]) > self.min_box_size) & ((boxes[:, 3] - boxes[:, 1]) > self.min_box_size)
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = batched_nms(boxes, scores.float(), lvl, self.nms_thresh)[:post]
            out_boxes.append(boxes[keep])
            out_scores.append(scores[keep])
        return out_boxes, out_scores

    @property
    def mode(self) -> str:
        return "training" if self.training else "testing"

    def forward(self, images: ImageList, features: Dict[str, torch.Tensor], targets=None):
        logits, deltas, anchors = self.predict(features)
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("the RPN needs targets in training")
            all_anchors = torch.cat(anchors)
            labels, matched = self.label_anchors(all_anchors, targets, images.image_sizes)
            losses = self.losses(all_anchors, torch.cat(logits, 1), torch.cat(deltas, 1), labels, matched)
        boxes, _ = self.find_top_proposals(anchors, [x.detach() for x in logits], [x.detach() for x in deltas],
                                           images.image_sizes)
        return boxes, losses


# --- ROI heads -----------------------------------------------------------------------------------
class MultiLevelRoIAlign(nn.Module):
    """detectron2's ``ROIPooler`` (modeling/poolers.py): ROIAlign (aligned=True for ROIAlignV2) over
    FPN levels, a box of size sqrt(area) going to level floor(4 + log2(sqrt(area) / 224 + 1e-8)),
    clamped to the available levels (FPN paper, eq. 1)."""

    def __init__(self, featmap_names: List[str], strides: List[int], output_size: int, sampling_ratio: int,
                 aligned: bool, canonical_box_size: int = 224, canonical_level: int = 4):
        super().__init__()
        levels = [int(math.log2(s)) for s in strides]
        if levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"pooler features {featmap_names} must have consecutive strides, got {strides}")
        self.featmap_names = list(featmap_names)
        self.scales = [1.0 / s for s in strides]
        self.min_level, self.max_level = levels[0], levels[-1]
        self.output_size = (output_size, output_size)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.canonical_box_size, self.canonical_level = canonical_box_size, canonical_level

    def forward(self, features: Dict[str, torch.Tensor], boxes: List[torch.Tensor],
                image_shapes: Optional[List[Tuple[int, int]]] = None) -> torch.Tensor:
        x = [features[n] for n in self.featmap_names]
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
        if len(x) == 1:
            return roi_align(x[0], rois.to(x[0].dtype), self.output_size, self.scales[0], self.sampling_ratio,
                             self.aligned)
        sizes = ((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])).sqrt()
        level = torch.floor(self.canonical_level + torch.log2(sizes / self.canonical_box_size + 1e-8))
        level = (level.clamp(self.min_level, self.max_level) - self.min_level).to(torch.int64)
        out = x[0].new_zeros((rois.shape[0], x[0].shape[1]) + self.output_size)
        for i, (feature, scale) in enumerate(zip(x, self.scales)):
            idx = torch.where(level == i)[0]
            if idx.numel():
                out[idx] = roi_align(feature, rois[idx].to(feature.dtype), self.output_size, scale,
                                     self.sampling_ratio, self.aligned).to(out.dtype)
        return out


def _rasterize_polygons_in_box(polygons: List[np.ndarray], box: np.ndarray, size: int) -> np.ndarray:
    """detectron2's ``rasterize_polygons_within_box`` (structures/masks.py): the instance's polygons,
    shifted to the box corner and scaled to ``size`` x ``size``, rasterised by pycocotools."""
    w, h = box[2] - box[0], box[3] - box[1]
    ratio_w, ratio_h = size / max(w, 0.1), size / max(h, 0.1)
    scaled = []
    for p in polygons:
        q = np.array(p, dtype=np.float64)
        q[0::2] = (q[0::2] - box[0]) * ratio_w
        q[1::2] = (q[1::2] - box[1]) * ratio_h
        scaled.append(q)
    if not scaled:
        return np.zeros((size, size), dtype=bool)
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(scaled, size, size))).astype(bool)


def mask_targets_like_detectron2(target: Dict, matched_idxs: torch.Tensor, boxes: torch.Tensor,
                                 size: int) -> torch.Tensor:
    """Binary (P, size, size) mask targets of positive proposals ``boxes`` matched to gt ``matched_idxs``.

    As detectron2's ``mask_rcnn_loss`` via ``crop_and_resize``: polygons (INPUT.MASK_FORMAT polygon,
    ``target["polygons"]``) are rasterised inside each box (``PolygonMasks.crop_and_resize``); bitmasks
    (``target["masks"]``) are cropped with aligned ROIAlign and thresholded at 0.5
    (``BitMasks.crop_and_resize``). torchvision instead uses soft targets from ROIAlign(aligned=False).
    """
    if "polygons" in target:
        polygons = target["polygons"]
        cpu_boxes = boxes.detach().float().cpu().numpy()
        out = [_rasterize_polygons_in_box(polygons[int(i)], b, size) for i, b in zip(matched_idxs.tolist(), cpu_boxes)]
        if not out:
            return torch.zeros((0, size, size), dtype=torch.float32, device=boxes.device)
        return torch.from_numpy(np.stack(out)).to(device=boxes.device, dtype=torch.float32)
    masks = target["masks"]
    rois = torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=torch.float32)[:, None],
                      boxes.detach().float()], dim=1)
    crops = roi_align(masks[matched_idxs][:, None].to(device=boxes.device, dtype=torch.float32), rois,
                      (size, size), 1.0, 0, aligned=True)[:, 0]
    return (crops >= 0.5).to(torch.float32)


class Detectron2ROIHeads(RoIHeads):
    """torchvision's RoIHeads (box + optional mask branch) computing detectron2's ``StandardROIHeads``
    (modeling/roi_heads/roi_heads.py, fast_rcnn.py, mask_head.py):

    - training samples as ``label_and_sample_proposals`` (PROPOSAL_APPEND_GT honoured);
    - box losses as ``FastRCNNOutputLayers.losses`` (SMOOTH_L1_BETA, normalised by the number of
      sampled proposals, BBOX_REG_LOSS_WEIGHT);
    - inference as ``fast_rcnn_inference``: softmax, per-class decode in float32, clip, score >
      SCORE_THRESH_TEST, per-class NMS, DETECTIONS_PER_IMAGE (torchvision also drops boxes < 1e-2 px);
    - mask targets as ``mask_rcnn_loss`` (:func:`mask_targets_like_detectron2`: binary, polygon
      rasterisation or aligned ROIAlign >= 0.5) and mask probabilities as ``mask_rcnn_inference``.
    """

    def __init__(self, *args, smooth_l1_beta: float, bbox_loss_weight: float, proposal_append_gt: bool = True,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.smooth_l1_beta = smooth_l1_beta
        self.bbox_loss_weight = bbox_loss_weight
        self.proposal_append_gt = proposal_append_gt

    def check_targets(self, targets):
        if targets is None or not all("boxes" in t and "labels" in t for t in targets):
            raise ValueError("training targets need boxes and labels")
        if self.has_mask() and not all("masks" in t or "polygons" in t for t in targets):
            raise ValueError("Mask R-CNN training targets need masks (bitmask) or polygons")

    def select_training_samples(self, proposals, targets):
        self.check_targets(targets)
        if self.proposal_append_gt:
            proposals = [torch.cat([p, t["boxes"].to(p.dtype)]) for p, t in zip(proposals, targets)]
        matched_idxs, labels = self.assign_targets_to_proposals(proposals, [t["boxes"] for t in targets],
                                                                [t["labels"] for t in targets])
        pos, neg = self.fg_bg_sampler(labels)
        out_p, out_m, out_l, out_t = [], [], [], []
        for i, (p, m, lab, t) in enumerate(zip(proposals, matched_idxs, labels, targets)):
            keep = torch.where(pos[i] | neg[i])[0]
            p, m, lab = p[keep], m[keep], lab[keep]
            gt = t["boxes"] if t["boxes"].numel() else torch.zeros((1, 4), dtype=p.dtype, device=p.device)
            out_p.append(p)
            out_m.append(m)
            out_l.append(lab)
            out_t.append(self.box_coder.encode_single(gt[m], p))
        return out_p, out_m, out_l, out_t

    def box_losses(self, class_logits, box_regression, labels, regression_targets) -> Dict[str, torch.Tensor]:
        labels = torch.cat(labels, dim=0)
        regression_targets = torch.cat(regression_targets, dim=0)
        loss_cls = F.cross_entropy(class_logits.float(), labels) if labels.numel() else class_logits.sum() * 0
        pos = torch.where(labels > 0)[0]
        box_regression = box_regression.reshape(box_regression.shape[0], -1, 4)
        loss_box = F.smooth_l1_loss(box_regression[pos, labels[pos]].float(), regression_targets[pos],
                                    beta=self.smooth_l1_beta, reduction="sum") / max(labels.numel(), 1)
        return {"loss_cls": loss_cls, "loss_box_reg": loss_box * self.bbox_loss_weight}

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):
        num_classes = class_logits.shape[-1]
        boxes_all = self.box_coder.decode(box_regression.float(), proposals).view(-1, num_classes, 4)
        scores_all = F.softmax(class_logits.float(), -1)
        out_boxes, out_scores, out_labels = [], [], []
        for boxes, scores, shape in zip(boxes_all.split([len(p) for p in proposals]),
                                        scores_all.split([len(p) for p in proposals]), image_shapes):
            valid = torch.isfinite(boxes).all(dim=2).all(dim=1) & torch.isfinite(scores).all(dim=1)
            if not valid.all():
                boxes, scores = boxes[valid], scores[valid]
            boxes = clip_boxes_to_image(boxes, shape)[:, 1:]  # background is class 0 here
            scores = scores[:, 1:]
            keep_mask = scores > self.score_thresh
            inds = keep_mask.nonzero()
            boxes, scores = boxes[keep_mask], scores[keep_mask]
            keep = batched_nms(boxes, scores, inds[:, 1], self.nms_thresh)
            if self.detections_per_img >= 0:  # -1: keep all, as detectron2
                keep = keep[:self.detections_per_img]
            out_boxes.append(boxes[keep])
            out_scores.append(scores[keep])
            out_labels.append(inds[keep, 1] + 1)
        return out_boxes, out_scores, out_labels

    def mask_loss(self, mask_logits, proposals, targets, labels, matched_idxs) -> torch.Tensor:
        size = mask_logits.shape[-1]
        gt = torch.cat([mask_targets_like_detectron2(t, m, p, size) for t, m, p in zip(targets, matched_idxs, proposals)])
        labels = torch.cat(labels)
        if gt.numel() == 0:
            return mask_logits.sum() * 0
        logits = mask_logits[torch.arange(len(labels), device=labels.device), labels]
        return F.binary_cross_entropy_with_logits(logits.float(), gt, reduction="mean")

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        result: List[Dict[str, torch.Tensor]] = []
        losses: Dict[str, torch.Tensor] = {}
        if self.training:
            losses = self.box_losses(class_logits, box_regression, labels, regression_targets)
        else:
            boxes, scores, classes = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
            result = [{"boxes": b, "labels": c, "scores": s} for b, c, s in zip(boxes, classes, scores)]
        if self.has_mask():
            if self.training:  # the mask head trains on the sampled foreground proposals
                positive = [torch.where(lab > 0)[0] for lab in labels]
                mask_proposals = [p[i] for p, i in zip(proposals, positive)]
                pos_matched = [m[i] for m, i in zip(matched_idxs, positive)]
                pos_labels = [lab[i] for lab, i in zip(labels, positive)]
            else:
                mask_proposals = [r["boxes"] for r in result]
            mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_proposals, image_shapes)))
            if self.training:
                losses["loss_mask"] = self.mask_loss(mask_logits, mask_proposals, targets, pos_labels, pos_matched)
            else:
                probs = mask_logits.float().sigmoid()
                counts = [len(r["boxes"]) for r in result]
                for p, r in zip(probs.split(counts), result):
                    r["masks"] = p[torch.arange(len(p), device=p.device), r["labels"]][:, None]
        return result, losses


def init_heads_like_detectron2(roi_heads: RoIHeads) -> None:
    """detectron2's initialisation of the ROI heads (the RPN head's, normal std 0.01, is torchvision's too):
    box head convs ``c2_msra_fill`` and FCs ``c2_xavier_fill`` (``FastRCNNConvFCHead``), class scores
    normal std 0.01 and box deltas std 0.001 (``FastRCNNOutputLayers``), mask convs and deconv
    ``c2_msra_fill`` and mask logits normal std 0.001 (``MaskRCNNConvUpsampleHead``), biases 0."""
    for m in roi_heads.box_head.modules():
        if isinstance(m, nn.Conv2d):
            weight_init.c2_msra_fill(m)
        elif isinstance(m, nn.Linear):
            weight_init.c2_xavier_fill(m)
    nn.init.normal_(roi_heads.box_predictor.cls_score.weight, std=0.01)
    nn.init.normal_(roi_heads.box_predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(roi_heads.box_predictor.cls_score.bias)
    nn.init.zeros_(roi_heads.box_predictor.bbox_pred.bias)
    if roi_heads.mask_head is not None:
        for m in list(roi_heads.mask_head.modules()) + [roi_heads.mask_predictor.conv5_mask]:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                weight_init.c2_msra_fill(m)
        nn.init.normal_(roi_heads.mask_predictor.mask_fcn_logits.weight, std=0.001)
        nn.init.zeros_(roi_heads.mask_predictor.mask_fcn_logits.bias)


# --- pre- and post-processing --------------------------------------------------------------------
def resized_shape_like_detectron2(h: int, w: int, short: int, max_size: int) -> Tuple[int, int]:
    """detectron2's ``ResizeShortestEdge.get_output_shape`` (data/transforms/augmentation_impl.py)."""
    size = float(short)
    scale = size / min(h, w)
    newh, neww = (size, scale * w) if h < w else (scale * h, size)
    if max(newh, neww) > max_size:
        scale = max_size / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def resize_like_detectron2(image: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resize a (C, H, W) 0-255 image as detectron2's ``ResizeTransform`` does for uint8 images: PIL's
    bilinear filter (antialiased when shrinking) on uint8 values. torch's uint8 antialiased bilinear
    kernel reproduces PIL's (within 1 grey level); where it is not available (CUDA) the float kernel
    with antialiasing is rounded back to 0-255. Returns uint8."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image if image.dtype == torch.uint8 else image.round().clamp(0, 255).to(torch.uint8)
    if image.dtype != torch.uint8:
        image = image.round().clamp(0, 255).to(torch.uint8)
    if image.device.type == "cpu":
        return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    out = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.round().clamp(0, 255).to(torch.uint8)


def _scale_polygons(polygons: List[np.ndarray], sx: float, sy: float) -> List[np.ndarray]:
    """One instance's polygons (x0, y0, x1, ...) scaled in float64, as detectron2's ``apply_polygons``."""
    out = []
    for p in polygons:
        q = np.array(p, dtype=np.float64)
        q[0::2] *= sx
        q[1::2] *= sy
        out.append(q)
    return out


def _resize_bitmasks(masks: torch.Tensor, size: Tuple[int, int], polygons: Optional[List], sx: float,
                     sy: float) -> torch.Tensor:
    """(K, H, W) uint8 masks at ``size``: each resized with PIL's nearest filter (detectron2's
    ``ResizeTransform.apply_segmentation``), except those of polygon annotations (``polygons[k]`` not
    None), which detectron2 rasterises from the scaled polygons (``polygons_to_bitmask``)."""
    h, w = size
    out = []
    for k, m in enumerate(masks.cpu().numpy()):
        polys = polygons[k] if polygons is not None else None
        if polys is not None:
            scaled = _scale_polygons(polys, sx, sy)
            out.append(mask_util.decode(mask_util.merge(mask_util.frPyObjects(scaled, h, w))) if scaled
                       else np.zeros((h, w), np.uint8))
        else:
            out.append(np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST)))
    if not out:
        return torch.zeros((0, h, w), dtype=torch.uint8, device=masks.device)
    return torch.from_numpy(np.stack(out).astype(np.uint8)).to(masks.device)


def paste_masks_like_detectron2(masks: torch.Tensor, boxes: torch.Tensor, image_shape: Tuple[int, int],
                                threshold: float = 0.5) -> torch.Tensor:
    """detectron2's ``paste_masks_in_image`` (layers/mask_ops.py): each (M, M) mask probability map is
    resampled with ``grid_sample`` onto the float box in the image and thresholded with ``>=``.

    Returns a bool (N, H, W) tensor. On CPU detectron2 pastes each mask only inside its box grown
    by one pixel (floor/ceil), on other devices over the whole image; so does this function.
    (torchvision instead grows the box by 30/28, rounds it to integers and resizes bilinearly.)
    """
    n = len(masks)
    h, w = image_shape
    out = torch.zeros((n, h, w), dtype=torch.bool, device=masks.device)
    if n == 0:
        return out
    masks = masks.float()
    boxes = boxes.float()
    per_box = masks.device.type == "cpu"
    for i in range(n) if per_box else [None]:
        b = boxes[i:i + 1] if per_box else boxes
        m = masks[i:i + 1] if per_box else masks
        if per_box:
            x0 = int(torch.clamp(b[0, 0].floor() - 1, min=0))
            y0 = int(torch.clamp(b[0, 1].floor() - 1, min=0))
            x1 = int(torch.clamp(b[0, 2].ceil() + 1, max=w))
            y1 = int(torch.clamp(b[0, 3].ceil() + 1, max=h))
        else:
            x0, y0, x1, y1 = 0, 0, w, h
        if x1 <= x0 or y1 <= y0:
            continue
        bx0, by0, bx1, by1 = b.split(1, dim=1)
        ys = torch.arange(y0, y1, device=m.device, dtype=torch.float32) + 0.5
        xs = torch.arange(x0, x1, device=m.device, dtype=torch.float32) + 0.5
        ys = (ys - by0) / (by1 - by0) * 2 - 1
        xs = (xs - bx0) / (bx1 - bx0) * 2 - 1
        grid = torch.stack([xs[:, None, :].expand(len(m), ys.shape[1], xs.shape[1]),
                            ys[:, :, None].expand(len(m), ys.shape[1], xs.shape[1])], dim=3)
        pasted = F.grid_sample(m[:, None], grid, align_corners=False)[:, 0] >= threshold
        if per_box:
            out[i, y0:y1, x0:x1] = pasted[0]
        else:
            out[:] = pasted
    return out


class Detectron2Transform(GeneralizedRCNNTransform):
    """torchvision's GeneralizedRCNNTransform with detectron2's pre- and post-processing:

    - resize as ``ResizeShortestEdge`` + ``ResizeTransform`` on uint8 images
      (:func:`resize_like_detectron2`): a short side drawn per image from MIN_SIZE_TRAIN ("choice",
      or uniformly in [min, max] with "range") capped by MAX_SIZE_TRAIN in training, MIN_SIZE_TEST /
      MAX_SIZE_TEST in eval; then ``(x - PIXEL_MEAN) / PIXEL_STD`` and zero padding to the backbone's
      size divisibility (``GeneralizedRCNN.preprocess_image``);
    - targets: boxes scaled, bitmasks of RLE annotations resized with PIL's nearest filter and those of
      polygon annotations rasterised at the new size (``transform_instance_annotations`` +
      ``annotations_to_instances``), polygons scaled, then empty instances removed
      (``filter_empty_instances``: box side <= 1e-5, an empty bitmask or no polygon);
    - the resize runs on the CPU, as in detectron2's data loader; the result moves to the model's device;
    - outputs as ``detector_postprocess``: boxes scaled to the original image, clipped, empty boxes
      removed, masks pasted with :func:`paste_masks_like_detectron2` (bool masks, ``>= 0.5``).

    Images are (3, H, W) tensors of 0-255 values (uint8 or float) in the INPUT.FORMAT channel order.
    """

    def __init__(self, *, min_size_train, sampling: str, max_size_train: int, min_size_test: int,
                 max_size_test: int, pixel_mean, pixel_std, size_divisibility: int, mask_threshold: float = 0.5):
        super().__init__(min_size=tuple(min_size_train), max_size=max_size_train, image_mean=list(pixel_mean),
                         image_std=list(pixel_std), size_divisible=size_divisibility)
        if sampling == "range" and len(min_size_train) != 2:
            raise ValueError(f"INPUT.MIN_SIZE_TRAIN={list(min_size_train)} must be [min, max] with range sampling")
        self.sampling = sampling
        self.max_size_train, self.min_size_test, self.max_size_test = max_size_train, min_size_test, max_size_test
        self.mask_threshold = mask_threshold
        self.register_buffer("_device", torch.empty(0), persistent=False)  # follows model.to(device)

    def _short_side(self) -> int:
        if not self.training:
            return self.min_size_test
        if self.sampling == "range":
            return int(torch.randint(self.min_size[0], self.min_size[1] + 1, (1,)).item())
        return self.min_size[int(torch.randint(len(self.min_size), (1,)).item())]

    def resize(self, image, target=None):
        h, w = image.shape[-2:]
        short = self._short_side()
        if short == 0:
            return resize_like_detectron2(image, (h, w)), target
        max_size = self.max_size_train if self.training else self.max_size_test
        new_h, new_w = resized_shape_like_detectron2(h, w, short, max_size)
        image = resize_like_detectron2(image, (new_h, new_w))
        if target is not None:
            target = dict(target)
            sx, sy = new_w / w, new_h / h
            boxes = target["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=target["boxes"].dtype,
                                                   device=target["boxes"].device)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, new_w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, new_h)
            target["boxes"] = boxes
            keep = ((boxes[:, 2] - boxes[:, 0]) > 1e-5) & ((boxes[:, 3] - boxes[:, 1]) > 1e-5)
            if "masks" in target:
                target["masks"] = _resize_bitmasks(target["masks"], (new_h, new_w), target.pop("mask_polygons", None),
                                                   sx, sy)
                if len(target["masks"]):
                    keep &= target["masks"].flatten(1).amax(dim=1) > 0
            if "polygons" in target:
                scaled = [_scale_polygons(inst, sx, sy) for inst in target["polygons"]]
                target["polygons"] = scaled
                keep &= torch.tensor([len(inst) > 0 for inst in scaled], dtype=torch.bool, device=keep.device)
            if not bool(keep.all()):
                idx = torch.where(keep)[0]
                for k in ("boxes", "labels", "masks"):
                    if k in target:
                        target[k] = target[k][idx]
                if "polygons" in target:
                    target["polygons"] = [target["polygons"][i] for i in idx.tolist()]
        return image, target

    def forward(self, images: List[torch.Tensor], targets=None):
        images = list(images)
        targets = [dict(t) for t in targets] if targets is not None else None
        for i, image in enumerate(images):
            if image.dim() != 3:
                raise ValueError(f"images are expected to be (C, H, W) tensors, got {tuple(image.shape)}")
            image, t = self.resize(image, targets[i] if targets is not None else None)
            images[i] = self.normalize(image.to(self._device.device, non_blocking=True).float())
            if targets is not None:
                targets[i] = t
        image_sizes = [tuple(img.shape[-2:]) for img in images]
        batched = self.batch_images(images, size_divisible=self.size_divisible)
        return ImageList(batched, image_sizes), targets

    def postprocess(self, result, image_shapes, original_image_sizes):
        if self.training:
            return result
        for r, (h, w), (oh, ow) in zip(result, image_shapes, original_image_sizes):
            boxes = r["boxes"] * torch.tensor([ow / w, oh / h, ow / w, oh / h], dtype=r["boxes"].dtype,
                                              device=r["boxes"].device)
            boxes = clip_boxes_to_image(boxes, (oh, ow))
            keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
            r["boxes"] = boxes
            for k in ("boxes", "scores", "labels", "masks"):
                if k in r:
                    r[k] = r[k][keep]
            if "masks" in r:
                r["masks"] = paste_masks_like_detectron2(r["masks"][:, 0], r["boxes"], (oh, ow),
                                                         self.mask_threshold)[:, None]
        return result
