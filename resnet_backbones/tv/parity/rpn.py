"""detectron2's RPN (modeling/proposal_generator/rpn.py, proposal_utils.py) composed of torchvision's pieces."""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import batched_nms, box_iou

from .anchors import Detectron2AnchorGenerator
from .precision import at_least_float32
from .tracing import clip_boxes, topk_count

__all__ = ["Detectron2RPN"]


class Detectron2RPN(nn.Module):
    """detectron2's ``RPN`` (modeling/proposal_generator/rpn.py) composed of torchvision's ``RPNHead``,
    ``Matcher``, ``BalancedPositiveNegativeSampler`` and ``BoxCoder`` (models/detection/rpn.py, _utils.py;
    the matcher and sampler built as its ``RegionProposalNetwork`` builds them, the box coder with
    MODEL.RPN.BBOX_REG_WEIGHTS):

    - proposals as ``find_top_rpn_proposals``: top-k per level on the objectness *logits*, clip,
      drop boxes not wider/taller than MODEL.PROPOSAL_GENERATOR.MIN_SIZE, NMS per level on logits,
      the first POST_NMS_TOPK per image (torchvision ranks on sigmoid probabilities, which tie at
      1.0 for logits >= 16.7 in float32, and drops boxes < 1e-3 px);
    - anchor labels as ``label_and_sample_anchors`` (RPN.BOUNDARY_THRESH honoured), losses as
      ``RPN.losses``: smooth-L1 with SMOOTH_L1_BETA, both normalised by BATCH_SIZE_PER_IMAGE x images,
      LOSS_WEIGHT and BBOX_REG_LOSS_WEIGHT, detectron2's loss names;
    - box deltas decoded in float32 (detectron2's ``apply_deltas``), also under autocast.

    Its ``forward(images, features, targets)`` is what torchvision's ``GeneralizedRCNN`` calls.

    Args (the detectron2 config key each comes from):
        anchor_generator: anchors per level (MODEL.ANCHOR_GENERATOR.*).
        head: torchvision's ``RPNHead``, detectron2's ``StandardRPNHead``.
        in_features: the feature maps it reads, MODEL.RPN.IN_FEATURES.
        iou_thresholds: MODEL.RPN.IOU_THRESHOLDS: anchors below the first are background, from the second
            foreground, between them ignored (and each gt box's best anchors foreground).
        batch_size_per_image, positive_fraction: MODEL.RPN.BATCH_SIZE_PER_IMAGE, POSITIVE_FRACTION.
        pre_nms_topk_train, pre_nms_topk_test: MODEL.RPN.PRE_NMS_TOPK_TRAIN, PRE_NMS_TOPK_TEST (per level).
        post_nms_topk_train, post_nms_topk_test: MODEL.RPN.POST_NMS_TOPK_TRAIN, POST_NMS_TOPK_TEST (per image).
        nms_thresh: MODEL.RPN.NMS_THRESH.
        min_box_size: MODEL.PROPOSAL_GENERATOR.MIN_SIZE.
        boundary_thresh: MODEL.RPN.BOUNDARY_THRESH (negative: anchors crossing the image are kept).
        smooth_l1_beta, loss_weight, bbox_loss_weight: MODEL.RPN.SMOOTH_L1_BETA, LOSS_WEIGHT,
            BBOX_REG_LOSS_WEIGHT.
        bbox_reg_weights: MODEL.RPN.BBOX_REG_WEIGHTS.
    """

    def __init__(self, anchor_generator: Detectron2AnchorGenerator, head: nn.Module, *, in_features: List[str],
                 iou_thresholds: Tuple[float, float], batch_size_per_image: int, positive_fraction: float,
                 pre_nms_topk_train: int, pre_nms_topk_test: int, post_nms_topk_train: int,
                 post_nms_topk_test: int, nms_thresh: float, min_box_size: float, boundary_thresh: float,
                 smooth_l1_beta: float, loss_weight: float, bbox_loss_weight: float,
                 bbox_reg_weights: Tuple[float, float, float, float]):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.proposal_matcher = det_utils.Matcher(iou_thresholds[1], iou_thresholds[0], allow_low_quality_matches=True)
        self.fg_bg_sampler = det_utils.BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.box_coder = det_utils.BoxCoder(weights=tuple(bbox_reg_weights))
        self.in_features = list(in_features)
        self.pre_nms_topk_train, self.pre_nms_topk_test = pre_nms_topk_train, pre_nms_topk_test
        self.post_nms_topk_train, self.post_nms_topk_test = post_nms_topk_train, post_nms_topk_test
        self.nms_thresh = nms_thresh
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
                inside = ((anchors[:, 0] >= -b) & (anchors[:, 1] >= -b)
                          & (anchors[:, 2] < w + b) & (anchors[:, 3] < h + b))
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
        loc = F.smooth_l1_loss(at_least_float32(deltas[fg]), targets[fg], beta=self.smooth_l1_beta, reduction="sum")
        valid = labels >= 0
        cls = F.binary_cross_entropy_with_logits(at_least_float32(logits[valid]), labels[valid], reduction="sum")
        normalizer = self.fg_bg_sampler.batch_size_per_image * labels.shape[0]
        return {"loss_rpn_cls": cls / normalizer * self.loss_weight,
                "loss_rpn_loc": loc / normalizer * self.loss_weight * self.bbox_loss_weight}

    @torch.no_grad()
    def find_top_proposals(self, anchors: List[torch.Tensor], logits: List[torch.Tensor], deltas: List[torch.Tensor],
                           image_sizes: List[Tuple[int, int]]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """detectron2's ``find_top_rpn_proposals``: returns boxes and their logits per image."""
        n = logits[0].shape[0]
        if self.training:
            pre, post = self.pre_nms_topk_train, self.post_nms_topk_train
        else:
            pre, post = self.pre_nms_topk_test, self.post_nms_topk_test
        top_boxes, top_scores, level_ids = [], [], []
        for level, (a, lg, d) in enumerate(zip(anchors, logits, deltas)):
            k = topk_count(lg, pre)
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
            if self.training and not valid.all():
                raise FloatingPointError("Predicted boxes or scores contain Inf/NaN. Training has diverged.")
            boxes, scores, lvl = boxes[valid], scores[valid], lvl[valid]  # no data-dependent branch: traceable
            boxes = clip_boxes(boxes, size)
            keep = ((boxes[:, 2] - boxes[:, 0]) > self.min_box_size) & ((boxes[:, 3] - boxes[:, 1]) > self.min_box_size)
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = batched_nms(boxes, scores.float(), lvl, self.nms_thresh)[:post]
            out_boxes.append(boxes[keep])
            out_scores.append(scores[keep])
        return out_boxes, out_scores

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
