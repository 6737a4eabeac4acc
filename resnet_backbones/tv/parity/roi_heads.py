"""detectron2's ``StandardROIHeads`` and ``Res5ROIHeads`` (modeling/roi_heads/roi_heads.py, fast_rcnn.py,
mask_head.py) on torchvision's ``RoIHeads``, and detectron2's initialisation of the heads."""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import batched_nms

from .masks import mask_targets_like_detectron2
from .precision import at_least_float32
from .tracing import clip_boxes

__all__ = ["Detectron2ROIHeads", "Detectron2Res5ROIHeads", "init_heads_like_detectron2"]


def _per_image(x: torch.Tensor, boxes: List[torch.Tensor]) -> List[torch.Tensor]:
    """``x``'s rows split by image, as many as each image has boxes. One image takes all rows without
    a split, so a traced graph of one image does not freeze the example's count."""
    return [x] if len(boxes) == 1 else list(x.split([len(b) for b in boxes]))


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

    Args (the detectron2 config key each comes from):
        box_roi_pool: ROIAlign of the proposals on MODEL.ROI_HEADS.IN_FEATURES (MODEL.ROI_BOX_HEAD.POOLER_*).
        box_head: detectron2's ``FastRCNNConvFCHead`` (MODEL.ROI_BOX_HEAD.NUM_CONV, CONV_DIM, NUM_FC, FC_DIM,
            NORM).
        box_predictor: torchvision's ``FastRCNNPredictor``: MODEL.ROI_HEADS.NUM_CLASSES + 1 scores
            (background first) and their box deltas.
        fg_iou_thresh, bg_iou_thresh: both the one value of MODEL.ROI_HEADS.IOU_THRESHOLDS (foreground from it,
            background below it).
        batch_size_per_image, positive_fraction: MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE, POSITIVE_FRACTION.
        bbox_reg_weights: MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS.
        score_thresh, nms_thresh: MODEL.ROI_HEADS.SCORE_THRESH_TEST, NMS_THRESH_TEST.
        detections_per_img: TEST.DETECTIONS_PER_IMAGE (-1: all).
        smooth_l1_beta, bbox_loss_weight: MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA, BBOX_REG_LOSS_WEIGHT.
        proposal_append_gt: MODEL.ROI_HEADS.PROPOSAL_APPEND_GT.
        mask_roi_pool, mask_head, mask_predictor: MODEL.MASK_ON; ROIAlign with MODEL.ROI_MASK_HEAD.POOLER_*,
            detectron2's ``MaskRCNNConvUpsampleHead`` as torchvision's ``MaskRCNNHeads`` (NUM_CONV convs of
            CONV_DIM, NORM) and ``MaskRCNNPredictor`` (the deconv and the per-class logits).
    """

    def __init__(self, box_roi_pool: nn.Module, box_head: nn.Module, box_predictor: nn.Module, *,
                 fg_iou_thresh: float, bg_iou_thresh: float, batch_size_per_image: int, positive_fraction: float,
                 bbox_reg_weights: Tuple[float, float, float, float], score_thresh: float, nms_thresh: float,
                 detections_per_img: int, smooth_l1_beta: float, bbox_loss_weight: float, proposal_append_gt: bool,
                 mask_roi_pool: Optional[nn.Module] = None, mask_head: Optional[nn.Module] = None,
                 mask_predictor: Optional[nn.Module] = None):
        super().__init__(box_roi_pool, box_head, box_predictor, fg_iou_thresh=fg_iou_thresh,
                         bg_iou_thresh=bg_iou_thresh, batch_size_per_image=batch_size_per_image,
                         positive_fraction=positive_fraction, bbox_reg_weights=bbox_reg_weights,
                         score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img,
                         mask_roi_pool=mask_roi_pool, mask_head=mask_head, mask_predictor=mask_predictor)
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
        loss_cls = F.cross_entropy(at_least_float32(class_logits), labels) if labels.numel() else class_logits.sum() * 0
        pos = torch.where(labels > 0)[0]
        box_regression = box_regression.reshape(box_regression.shape[0], -1, 4)
        loss_box = F.smooth_l1_loss(at_least_float32(box_regression[pos, labels[pos]]), regression_targets[pos],
                                    beta=self.smooth_l1_beta, reduction="sum") / max(labels.numel(), 1)
        return {"loss_cls": loss_cls, "loss_box_reg": loss_box * self.bbox_loss_weight}

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):
        num_classes = class_logits.shape[-1]
        boxes_all = self.box_coder.decode(box_regression.float(), proposals).view(-1, num_classes, 4)
        scores_all = F.softmax(class_logits.float(), -1)
        out_boxes, out_scores, out_labels = [], [], []
        for boxes, scores, shape in zip(_per_image(boxes_all, proposals), _per_image(scores_all, proposals),
                                        image_shapes):
            valid = torch.isfinite(boxes).all(dim=2).all(dim=1) & torch.isfinite(scores).all(dim=1)
            boxes, scores = boxes[valid], scores[valid]  # no data-dependent branch: traceable
            boxes = clip_boxes(boxes, shape)[:, 1:]  # background is class 0 here
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
        gt = torch.cat([mask_targets_like_detectron2(t, m, p, size)
                        for t, m, p in zip(targets, matched_idxs, proposals)])
        labels = torch.cat(labels)
        if gt.numel() == 0:
            return mask_logits.sum() * 0
        logits = mask_logits[torch.arange(len(labels), device=labels.device), labels]
        return F.binary_cross_entropy_with_logits(at_least_float32(logits), gt, reduction="mean")

    @staticmethod
    def foreground(proposals, matched_idxs, labels):
        """The sampled foreground proposals per image, their matched gt indices and labels (detectron2's
        ``select_foreground_proposals``), and a mask over all sampled proposals selecting them."""
        positive = [torch.where(lab > 0)[0] for lab in labels]
        return ([p[i] for p, i in zip(proposals, positive)], [m[i] for m, i in zip(matched_idxs, positive)],
                [lab[i] for lab, i in zip(labels, positive)], torch.cat(labels) > 0)

    @staticmethod
    def attach_mask_probs(result, mask_logits) -> None:
        """``mask_rcnn_inference``: the sigmoid of each detection's own class channel, as ``masks``."""
        probs = mask_logits.float().sigmoid()
        for p, r in zip(_per_image(probs, [r["boxes"] for r in result]), result):
            # p[arange(K), labels][:, None] as a gather: a traced arange(len(p)) would freeze K into the graph.
            index = r["labels"].view(-1, 1, 1, 1).expand(-1, 1, p.shape[2], p.shape[3])
            r["masks"] = p.gather(1, index)

    def detections(self, class_logits, box_regression, proposals, image_shapes):
        boxes, scores, classes = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        return [{"boxes": b, "labels": c, "scores": s} for b, c, s in zip(boxes, classes, scores)]

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
            result = self.detections(class_logits, box_regression, proposals, image_shapes)
        if self.has_mask():
            if self.training:  # the mask head trains on the sampled foreground proposals
                mask_proposals, pos_matched, pos_labels, _ = self.foreground(proposals, matched_idxs, labels)
            else:
                mask_proposals = [r["boxes"] for r in result]
            mask_features = self.mask_roi_pool(features, mask_proposals, image_shapes)
            mask_logits = self.mask_predictor(self.mask_head(mask_features))
            if self.training:
                losses["loss_mask"] = self.mask_loss(mask_logits, mask_proposals, targets, pos_labels, pos_matched)
            else:
                self.attach_mask_probs(result, mask_logits)
        return result, losses


class Detectron2Res5ROIHeads(Detectron2ROIHeads):
    """detectron2's ``Res5ROIHeads`` (modeling/roi_heads/roi_heads.py): the C4 detector of the ResNet
    paper (He et al. 2016, section 4.3 and appendix A), whose whole res5 stage runs per RoI.

    - ``_shared_roi_transform``: ROIAlign of each box on res4 (``pooler``: one level, stride 16,
      ROI_BOX_HEAD.POOLER_RESOLUTION / POOLER_SAMPLING_RATIO / POOLER_TYPE), then ``res5`` (built by
      :func:`resnet_backbones.modeling.build_res5_head`: the body's block code and parameter names,
      first block at stride 2);
    - the box predictor on ``box_features.mean(dim=[2, 3])``; sampling, losses and inference as
      :class:`Detectron2ROIHeads` (``label_and_sample_proposals``, ``FastRCNNOutputLayers``);
    - masks (MODEL.MASK_ON): in training the mask head runs on the res5 features of the foreground
      proposals already computed for the boxes (``select_foreground_proposals``), at inference on res5 of
      the pooled detections (``forward_with_given_boxes``). detectron2's C4 mask head has
      ROI_MASK_HEAD.NUM_CONV 0: ``mask_head`` is then empty and ``mask_predictor`` is the deconv +
      predictor (``MaskRCNNConvUpsampleHead``).

    Args: those of :class:`Detectron2ROIHeads`, but ``res5`` (MODEL.RESNETS.*, the stage's blocks) in
    place of ``box_head``, and no ``mask_roi_pool``: the mask head reads the res5 features.
    """

    def __init__(self, box_roi_pool: nn.Module, res5: nn.Module, box_predictor: nn.Module, *,
                 fg_iou_thresh: float, bg_iou_thresh: float, batch_size_per_image: int, positive_fraction: float,
                 bbox_reg_weights: Tuple[float, float, float, float], score_thresh: float, nms_thresh: float,
                 detections_per_img: int, smooth_l1_beta: float, bbox_loss_weight: float, proposal_append_gt: bool,
                 mask_head: Optional[nn.Module] = None, mask_predictor: Optional[nn.Module] = None):
        super().__init__(box_roi_pool, nn.Identity(), box_predictor, fg_iou_thresh=fg_iou_thresh,
                         bg_iou_thresh=bg_iou_thresh, batch_size_per_image=batch_size_per_image,
                         positive_fraction=positive_fraction, bbox_reg_weights=bbox_reg_weights,
                         score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img,
                         smooth_l1_beta=smooth_l1_beta, bbox_loss_weight=bbox_loss_weight,
                         proposal_append_gt=proposal_append_gt, mask_head=mask_head, mask_predictor=mask_predictor)
        self.res5 = res5

    def has_mask(self) -> bool:
        return self.mask_predictor is not None

    def shared_roi_transform(self, features, boxes, image_shapes) -> torch.Tensor:
        return self.res5(self.box_roi_pool(features, boxes, image_shapes))

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.shared_roi_transform(features, proposals, image_shapes)
        class_logits, box_regression = self.box_predictor(box_features.mean(dim=(2, 3)))
        if self.training:
            losses = self.box_losses(class_logits, box_regression, labels, regression_targets)
            if self.has_mask():
                mask_proposals, pos_matched, pos_labels, fg = self.foreground(proposals, matched_idxs, labels)
                mask_logits = self.mask_predictor(self.mask_head(box_features[fg]))
                losses["loss_mask"] = self.mask_loss(mask_logits, mask_proposals, targets, pos_labels, pos_matched)
            return [], losses
        result = self.detections(class_logits, box_regression, proposals, image_shapes)
        if self.has_mask():
            x = self.shared_roi_transform(features, [r["boxes"] for r in result], image_shapes)
            self.attach_mask_probs(result, self.mask_predictor(self.mask_head(x)))
        return result, {}


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
