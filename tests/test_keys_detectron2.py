"""Every RPN and ROI-head key the torchvision engine reads means what it means in detectron2, at values other
than the defaults (needs detectron2).

tests/test_engine_equivalence.py compares the engines at the shipped configs' values; a torchvision engine
that hard-coded one of those values (ignored the key) would pass it. Here each key is set to a value of its
own on a small detector (R-18 FPN, quick schedule; ~100 px images), both engines hold the same weights
(detectron2's, through the detector checkpoint converter) and see the same backbone features:

- inference keys: the RPN's proposals and the final detections (scaled to the original image size) are
  the same, paired by content (tests/detections.py);
- training-only keys: the RPN and ROI-head losses are the same on the same ground truth, with every
  anchor and every proposal sampled (so that no random draw differs between the engines).

Each case also checks that it bites: the torchvision engine's result at the quick schedule's value (what an
engine that ignored the key, or hard-coded that value, would give) must fail the same comparison.
"""
import os
import sys
from typing import Dict, List

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2")
pytest.importorskip("detectron2.modeling")

from detectron2.modeling import build_model as d2_build_model  # noqa: E402
from detectron2.modeling.postprocessing import detector_postprocess  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from torchvision.models.detection.image_list import ImageList as TvImageList  # noqa: E402

import resnet_backbones  # noqa: E402,F401  (registers the builders)
from resnet_backbones.config import load_config  # noqa: E402
from resnet_backbones.tv.model import build_model as tv_build_model  # noqa: E402
from resnet_backbones.weights.detector import to_torchvision  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from detections import as_detections, assert_same_detections  # noqa: E402

QUICK = "quick_schedules/faster_rcnn_R18_synthetic.yaml"
# Images at the test size (short side 88, as the quick schedule's INPUT.MIN_SIZE_TEST) and the original
# sizes the detections are scaled back to.
TEST_SIZES = [(88, 120), (104, 88)]
ORIGINAL_SIZES = [(110, 150), (78, 66)]
# Deterministic sampling in training: every anchor and every proposal (detectron2's and torchvision's
# samplers draw differently otherwise).
ALL_SAMPLED = ["MODEL.RPN.BATCH_SIZE_PER_IMAGE", "1000000", "MODEL.RPN.POSITIVE_FRACTION", "1.0",
               "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "100000", "MODEL.ROI_HEADS.POSITIVE_FRACTION", "1.0"]

# name -> overrides. Each value differs from the quick schedule's (and detectron2's default).
INFERENCE_KEYS = {
    "RPN.NMS_THRESH": ["MODEL.RPN.NMS_THRESH", "0.5"],
    "RPN.PRE_NMS_TOPK_TEST": ["MODEL.RPN.PRE_NMS_TOPK_TEST", "40"],
    "RPN.POST_NMS_TOPK_TEST": ["MODEL.RPN.POST_NMS_TOPK_TEST", "30"],
    "RPN.BBOX_REG_WEIGHTS": ["MODEL.RPN.BBOX_REG_WEIGHTS", "(2.0, 2.0, 0.5, 0.5)"],
    "RPN.IN_FEATURES": ["MODEL.RPN.IN_FEATURES", "['p3', 'p4', 'p5', 'p6']",
                        "MODEL.ANCHOR_GENERATOR.SIZES", "[[32], [64], [128], [256]]"],
    "PROPOSAL_GENERATOR.MIN_SIZE": ["MODEL.PROPOSAL_GENERATOR.MIN_SIZE", "12"],
    "ANCHOR_GENERATOR.SIZES": ["MODEL.ANCHOR_GENERATOR.SIZES", "[[24], [48], [96], [192], [384]]"],
    "ANCHOR_GENERATOR.ASPECT_RATIOS": ["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.25, 1.0, 4.0]]"],
    "ANCHOR_GENERATOR.OFFSET": ["MODEL.ANCHOR_GENERATOR.OFFSET", "0.5"],
    "ROI_HEADS.NMS_THRESH_TEST": ["MODEL.ROI_HEADS.NMS_THRESH_TEST", "0.3"],
    "ROI_HEADS.SCORE_THRESH_TEST": ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.5"],
    "ROI_HEADS.IN_FEATURES": ["MODEL.ROI_HEADS.IN_FEATURES", "['p3', 'p4', 'p5']"],
    "TEST.DETECTIONS_PER_IMAGE": ["TEST.DETECTIONS_PER_IMAGE", "15"],
    "ROI_BOX_HEAD.BBOX_REG_WEIGHTS": ["MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", "(5.0, 5.0, 2.0, 2.0)"],
    "ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": ["MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", "2"],
    "ROI_BOX_HEAD.POOLER_TYPE": ["MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlign"],
}
TRAINING_KEYS = {
    "RPN.SMOOTH_L1_BETA": ["MODEL.RPN.SMOOTH_L1_BETA", "0.1"],
    "RPN.LOSS_WEIGHT": ["MODEL.RPN.LOSS_WEIGHT", "2.0"],
    "RPN.BBOX_REG_LOSS_WEIGHT": ["MODEL.RPN.BBOX_REG_LOSS_WEIGHT", "3.0"],
    "RPN.IOU_THRESHOLDS": ["MODEL.RPN.IOU_THRESHOLDS", "[0.4, 0.6]"],
    "RPN.BOUNDARY_THRESH": ["MODEL.RPN.BOUNDARY_THRESH", "0"],
    "RPN.BATCH_SIZE_PER_IMAGE": ["MODEL.RPN.BATCH_SIZE_PER_IMAGE", "2000000"],  # the losses' normaliser
    "RPN.BBOX_REG_WEIGHTS": ["MODEL.RPN.BBOX_REG_WEIGHTS", "(2.0, 2.0, 0.5, 0.5)"],  # the regression targets
    "RPN.PRE_NMS_TOPK_TRAIN": ["MODEL.RPN.PRE_NMS_TOPK_TRAIN", "40"],
    "RPN.POST_NMS_TOPK_TRAIN": ["MODEL.RPN.POST_NMS_TOPK_TRAIN", "30"],
    "ROI_HEADS.IOU_THRESHOLDS": ["MODEL.ROI_HEADS.IOU_THRESHOLDS", "[0.6]"],
    "ROI_HEADS.PROPOSAL_APPEND_GT": ["MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", "False"],
    "ROI_BOX_HEAD.SMOOTH_L1_BETA": ["MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA", "0.5"],
    "ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT": ["MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT", "2.0"],
    "ROI_BOX_HEAD.BBOX_REG_WEIGHTS": ["MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", "(5.0, 5.0, 2.0, 2.0)"],
}


def _cfg(*overrides):
    return load_config(QUICK, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *overrides], use_detectron2=True)


def _image(h, w, seed):
    """A gradient with noise and three flat-coloured rectangles (the ground truth, classes 0..2): no two
    anchors see the same pixels, so no top-k or NMS decision is a tie between equal scores."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=2) + rng.normal(0, 8, (h, w, 3))
    boxes = []
    for _ in range(3):
        bw, bh = rng.integers(16, w // 2), rng.integers(16, h // 2)
        x0, y0 = rng.integers(0, w - bw), rng.integers(0, h - bh)
        img[y0:y0 + bh, x0:x0 + bw] = rng.integers(0, 256, 3) + rng.normal(0, 4, (bh, bw, 3))
        boxes.append([x0, y0, x0 + bw, y0 + bh])
    image = torch.from_numpy(img.clip(0, 255).astype(np.uint8)).permute(2, 0, 1).contiguous()
    return image, torch.tensor(boxes, dtype=torch.float32), torch.tensor([0, 1, 2])


class Base:
    """detectron2's model at the quick schedule's values, with weights that make decisions (spread-out RPN
    logits and deltas, box scores around the thresholds), the shared inputs and backbone features, and
    the torchvision engine's outputs at the quick schedule's values: what it would give for a key it ignored."""

    def __init__(self):
        self.cfg = _cfg()
        torch.manual_seed(0)
        d2 = d2_build_model(self.cfg).eval()
        with torch.no_grad():
            for name, buf in d2.backbone.named_buffers():  # BN statistics of a trained-looking body
                if name.endswith("running_mean"):
                    buf.uniform_(-0.1, 0.1)
                elif name.endswith("running_var"):
                    buf.uniform_(0.5, 2.0)
            rpn = d2.proposal_generator.rpn_head
            rpn.objectness_logits.weight.normal_(std=0.05)
            rpn.anchor_deltas.weight.normal_(std=0.02)
            predictor = d2.roi_heads.box_predictor
            predictor.cls_score.weight.normal_(std=0.05)
            predictor.cls_score.bias[:2] += 1.0
            predictor.bbox_pred.weight.normal_(std=0.02)
        self.state = d2.state_dict()
        self.tv_state = to_torchvision(self.state).state
        images, self.gt = [], []
        for i, (h, w) in enumerate(TEST_SIZES):
            image, boxes, classes = _image(h, w, i)
            images.append(image)
            self.gt.append((boxes, classes))
        self.inputs = [{"image": im, "height": oh, "width": ow} for im, (oh, ow) in zip(images, ORIGINAL_SIZES)]
        with torch.no_grad():
            self.images = d2.preprocess_image(self.inputs)
            self.features = d2.backbone(self.images.tensor)
        self.tv_images = TvImageList(self.images.tensor, [tuple(s) for s in self.images.image_sizes])
        self.ignored = run_tv(engines(self, self.cfg)[1], self)
        self.ignored_losses = None


def engines(base, cfg):
    """Both engines built from ``cfg`` with the base weights (the torchvision engine through the converter)."""
    d2 = d2_build_model(cfg).eval()
    d2.load_state_dict(base.state)
    tv = tv_build_model(cfg).eval()
    tv.load_state_dict(base.tv_state, strict=True)
    return d2, tv


def _proposals(boxes, logits):
    return {"boxes": boxes.double(), "scores": logits.sigmoid().double(),
            "classes": torch.zeros(len(boxes), dtype=torch.int64), "masks": None}


@torch.no_grad()
def run_d2(d2, base):
    """detectron2's proposals (boxes, objectness probabilities) and detections in original coordinates."""
    proposals, _ = d2.proposal_generator(base.images, base.features, None)
    instances, _ = d2.roi_heads(base.images, base.features, proposals)
    props = [_proposals(p.proposal_boxes.tensor, p.objectness_logits) for p in proposals]
    dets = [detector_postprocess(x, inp["height"], inp["width"]) for x, inp in zip(instances, base.inputs)]
    return props, dets


@torch.no_grad()
def run_tv(tv, base):
    """The torchvision engine's proposals and detections on the same features, in the same forms."""
    top, found = tv.rpn.find_top_proposals, []
    tv.rpn.find_top_proposals = lambda *args: found.append(top(*args)) or found[-1]  # its logits too
    proposals, _ = tv.rpn(base.tv_images, base.features)
    props = [_proposals(b, s) for b, s in zip(*found[0])]
    result, _ = tv.roi_heads(base.features, proposals, base.tv_images.image_sizes)
    original = [(i["height"], i["width"]) for i in base.inputs]
    dets = tv.transform.postprocess(result, base.tv_images.image_sizes, original)
    return props, dets


def compare(cfg, tv_outputs, d2_outputs, what: str) -> None:
    """As many proposals and detections per image; proposals: boxes within 1e-3 px, objectness
    probabilities within 1e-5; detections: boxes within 1e-3 px, scores within 1e-5, the same classes;
    each image's lists paired by content. (On these inputs no score is a tie at a threshold or a top-k cut,
    so the counts must agree too.)"""
    post, per_image = cfg.MODEL.RPN.POST_NMS_TOPK_TEST, cfg.TEST.DETECTIONS_PER_IMAGE
    for i in range(len(TEST_SIZES)):
        counts = [len(as_detections(x[k][i])["scores"]) for x in (tv_outputs, d2_outputs) for k in (0, 1)]
        assert counts[:2] == counts[2:], f"{what} image {i}: (proposals, detections) torchvision engine " \
                                         f"{tuple(counts[:2])}, detectron2 {tuple(counts[2:])}"
        assert_same_detections(tv_outputs[0][i], d2_outputs[0][i], box_atol=1e-3, score_atol=1e-5, limit=post,
                               min_count=10, what=f"{what} image {i} proposals")
        assert_same_detections(tv_outputs[1][i], d2_outputs[1][i], box_atol=1e-3, score_atol=1e-5, limit=per_image,
                               score_floor=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, min_count=3,
                               what=f"{what} image {i} detections")


@pytest.fixture(scope="module")
def base():
    return Base()


@pytest.mark.parametrize("key", list(INFERENCE_KEYS))
def test_inference_key_means_the_same_on_both_engines(base, key):
    """The key at a value of its own: both engines give the same proposals and detections (:func:`compare`)
    on the same features and weights; and the torchvision engine's outputs at the quick schedule's value
    fail that comparison, so an engine that ignored the key (kept that value) fails this case."""
    cfg = _cfg(*INFERENCE_KEYS[key])
    d2, tv = engines(base, cfg)
    d2_outputs = run_d2(d2, base)
    compare(cfg, run_tv(tv, base), d2_outputs, key)
    try:
        compare(cfg, base.ignored, d2_outputs, key)
    except AssertionError:
        pass
    else:
        pytest.fail(f"{INFERENCE_KEYS[key]} changes nothing here: an engine that ignored it would pass this case")


def _targets(base):
    d2_gt, tv_gt = [], []
    for (boxes, classes), (h, w) in zip(base.gt, TEST_SIZES):
        d2_gt.append(Instances((h, w), gt_boxes=Boxes(boxes.clone()), gt_classes=classes.clone()))
        tv_gt.append({"boxes": boxes.clone(), "labels": classes + 1})
    return d2_gt, tv_gt


def training_losses(base, cfg):
    """Both engines' RPN and ROI-head losses in training mode on the base features and ground truth."""
    d2, tv = engines(base, cfg)
    d2.train()
    tv.train()
    d2_gt, tv_gt = _targets(base)
    torch.manual_seed(0)
    with torch.no_grad(), EventStorage():
        proposals, d2_losses = d2.proposal_generator(base.images, base.features, d2_gt)
        _, roi = d2.roi_heads(base.images, base.features, proposals, d2_gt)
        d2_losses.update(roi)
        props, tv_losses = tv.rpn(base.tv_images, base.features, tv_gt)
        _, roi = tv.roi_heads(base.features, props, base.tv_images.image_sizes, tv_gt)
        tv_losses.update(roi)
    return {k: v.item() for k, v in d2_losses.items()}, {k: v.item() for k, v in tv_losses.items()}


def _differ(a: Dict[str, float], b: Dict[str, float], rel: float = 1e-5) -> List[str]:
    """The names of the losses that differ by more than ``rel`` x max(abs(a), 1e-3)."""
    return [k for k in a if abs(a[k] - b[k]) > rel * max(abs(a[k]), 1e-3)]


@pytest.mark.parametrize("key", list(TRAINING_KEYS))
def test_training_key_means_the_same_on_both_engines(base, key):
    """The key at a value of its own, every anchor and proposal sampled: the same four losses (within 1e-5
    relative) from both engines on the same features, ground truth and weights; and the torchvision
    engine's losses at the quick schedule's value differ from detectron2's, so an engine that ignored the
    key fails this case."""
    if base.ignored_losses is None:
        base.ignored_losses = training_losses(base, _cfg(*ALL_SAMPLED))[1]
    d2_losses, tv_losses = training_losses(base, _cfg(*ALL_SAMPLED, *TRAINING_KEYS[key]))
    assert set(d2_losses) == set(tv_losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    assert not _differ(d2_losses, tv_losses), f"{key}: detectron2 {d2_losses}, torchvision engine {tv_losses}"
    assert _differ(d2_losses, base.ignored_losses), \
        f"{TRAINING_KEYS[key]} changes none of the losses here ({d2_losses}): an engine that ignored it would pass"
