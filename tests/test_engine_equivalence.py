"""The two engines compute the same thing, stage by stage, on the same weights (needs detectron2).

detectron2's GeneralizedRCNN and the torchvision engine are built from ``mask_rcnn_R50.yaml`` (FPN),
``mask_rcnn_R50_C4.yaml`` (C4: Res5ROIHeads), ``mask_rcnn_R50_DC5.yaml`` (DC5) and the VGG-16 baseline of He et al. 2016
``faster_rcnn_VGG16.yaml`` (CPU, test sizes reduced to keep the test fast); the torchvision engine gets
detectron2's weights through the detector checkpoint converter (strict). Each stage is fed detectron2's result of the stage before, so
a difference shows where it arises. Tolerances are the ones the engines promise in the README.
"""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

detectron2 = pytest.importorskip("detectron2")
pytest.importorskip("detectron2.modeling")

from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog  # noqa: E402
from detectron2.data.datasets import load_coco_json  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402
from detectron2.modeling import build_model as d2_build_model  # noqa: E402
from detectron2.modeling.postprocessing import detector_postprocess  # noqa: E402
from detectron2.structures import Boxes, Instances, PolygonMasks  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from torchvision.models.detection.image_list import ImageList as TvImageList  # noqa: E402

import resnet_backbones  # noqa: E402,F401  (registers the builders)
from resnet_backbones.config import load_config  # noqa: E402
from resnet_backbones.data import COCOInstances  # noqa: E402
from resnet_backbones.data.catalog import DatasetSpec  # noqa: E402
from resnet_backbones.tv.evaluate import _to_coco, coco_evaluate  # noqa: E402
from resnet_backbones.tv.model import build_model as tv_build_model  # noqa: E402
from resnet_backbones.weights.detector import to_detectron2, to_torchvision  # noqa: E402

from detections import assert_same_detections  # noqa: E402
from test_optimize import trained_looking_statistics_  # noqa: E402

# Test sizes: short side 320 (max 544) instead of COCO's 800/1333 keeps R-50 fast on a CPU (the body and
# FPN, most of these tests' time, cost half of what they did at 448/768). The images below still cover
# up- and down-scaling (300x400 -> 320x427, 1000x700 -> 457x320), the max-size cap (300x700 -> 233x544)
# and odd and even P6 grids in both directions (alone, padded to 32: 5x7, 8x5, 4x9, 5x8).
SIZES = ["INPUT.MIN_SIZE_TEST", "320", "INPUT.MAX_SIZE_TEST", "544", "INPUT.MIN_SIZE_TRAIN", "(320,)",
         "INPUT.MAX_SIZE_TRAIN", "544"]
# (height, width, kind): upscaled, downscaled, capped by the max size, grey, EXIF-rotated JPEG.
IMAGES = [(300, 400, "rgb"), (1000, 700, "rgb"), (300, 700, "rgb"), (250, 330, "grey"), (200, 300, "exif")]
NUM_RAISED = 5  # classes whose score bias is raised, so that random heads give dozens of detections


def _image(h, w, seed):
    """Flat-coloured rectangles and circles on a gradient: edges for the resize to get wrong."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 / w), (yy * 255 / h), ((xx + yy) * 127 / (h + w))], axis=2)
    for _ in range(6):
        x0, y0 = rng.integers(0, w - 20), rng.integers(0, h - 20)
        x1, y1 = x0 + rng.integers(10, w // 2), y0 + rng.integers(10, h // 2)
        img[y0:y1, x0:x1] = rng.integers(0, 256, 3)
    return img.clip(0, 255).astype(np.uint8)


def _polygons(h, w, seed):
    rng = np.random.default_rng(seed + 100)
    out = []
    for _ in range(3):
        cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
        r = rng.uniform(0.1, 0.2) * min(h, w)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
        pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).reshape(-1)
        out.append([pts.round(2).tolist()])
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A COCO-format dataset of the test images (80 COCO-like categories, polygons)."""
    root = tmp_path_factory.mktemp("equiv")
    images, anns = [], []
    for i, (h, w, kind) in enumerate(IMAGES):
        arr = _image(h, w, i)
        name = f"{i}.{'jpg' if kind == 'exif' else 'png'}"
        if kind == "grey":
            Image.fromarray(arr).convert("L").save(root / name)
        elif kind == "exif":
            # Stored as w x h pixels with orientation 6 ("rotate 90 CW to display"): displayed h x w.
            exif = Image.Exif()
            exif[0x0112] = 6
            Image.fromarray(np.ascontiguousarray(np.rot90(arr, 1))).save(root / name, exif=exif, quality=95)
        else:
            Image.fromarray(arr).save(root / name)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for k, poly in enumerate(_polygons(h, w, i)):
            xs, ys = poly[0][0::2], poly[0][1::2]
            box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": [1, 3, 18][k], "bbox": box,
                         "area": box[2] * box[3] * 0.7, "iscrowd": 0, "segmentation": poly})
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, 91) if c not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
    assert len(cats) == 80
    json_file = root / "instances.json"
    json_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return DatasetSpec("equiv_test", str(json_file), str(root))


# The three detector layouts of detectron2's COCO models and the VGG-16 of He et al. 2016 (Table 8),
# each from its shipped config. C4 runs the whole res5 stage per proposal (about 1.5 GFLOP each at R-50
# width) and DC5 a res5 at stride 16: at full width the two took 20 min here, so they run at a quarter
# of R-50's width (16 channels per group; the same blocks, strides, dilation and heads) and C4 with 300
# proposals.
QUARTER_WIDTH = ["MODEL.RESNETS.WIDTH_PER_GROUP", "16", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
LAYOUTS = {
    "FPN": ("mask_rcnn_R50.yaml", []),
    "C4": ("mask_rcnn_R50_C4.yaml", [*QUARTER_WIDTH, "MODEL.RPN.POST_NMS_TOPK_TEST", "300",
                                     "MODEL.RPN.POST_NMS_TOPK_TRAIN", "300"]),
    "DC5": ("mask_rcnn_R50_DC5.yaml", QUARTER_WIDTH),
    # The VGG-16 baseline of He et al. 2016 (Faster R-CNN only): its full width, at a short side of 224 (VGG-16 is
    # ~15 GFLOP at 224x224) with 300 proposals (fc6 is 25088x4096 per RoI).
    "VGG16": ("faster_rcnn_VGG16.yaml", ["INPUT.MIN_SIZE_TEST", "224", "INPUT.MAX_SIZE_TEST", "384",
                                         "INPUT.MIN_SIZE_TRAIN", "(224,)", "INPUT.MAX_SIZE_TRAIN", "384",
                                         "MODEL.RPN.POST_NMS_TOPK_TEST", "300", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "300"]),
}


def _build_engines(layout):
    name, extra = LAYOUTS[layout]
    # 50 detections per image (detectron2's 100 is a key of its own, tests/test_keys_detectron2.py): dozens to
    # compare, at half the mask head's cost (4 convolutions of 256 channels on 14x14 for each detection).
    overrides = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *SIZES, "TEST.DETECTIONS_PER_IMAGE", "50", *extra]
    cfg = load_config(name, overrides, use_detectron2=True)
    torch.manual_seed(0)
    d2 = d2_build_model(cfg).eval()
    with torch.no_grad():
        trained_looking_statistics_(d2.backbone)
        if layout == "C4":
            trained_looking_statistics_(d2.roi_heads.res5)
        bias = d2.roi_heads.box_predictor.cls_score.bias
        bias[:NUM_RAISED] += 6.0
        # An RPN head with spread-out logits, so that top-k and NMS have real decisions to make.
        d2.proposal_generator.rpn_head.objectness_logits.weight.normal_(std=0.05)
        d2.proposal_generator.rpn_head.anchor_deltas.weight.normal_(std=0.01)
        d2.roi_heads.box_predictor.bbox_pred.weight.normal_(std=0.01)
    tv = tv_build_model(cfg).eval()
    state = to_torchvision(d2.state_dict()).state
    tv.load_state_dict(state, strict=True)
    return cfg, d2, tv, layout


@pytest.fixture(scope="module", params=list(LAYOUTS))
def engines(request):
    """Both engines of one layout (FPN, C4, DC5, VGG16), the torchvision engine holding detectron2's weights."""
    return _build_engines(request.param)


@pytest.fixture(scope="module")
def fpn_engines():
    """The FPN layout alone, for the checks that do not depend on the heads (data, evaluation, tools)."""
    return _build_engines("FPN")


def _box_features(layout, cfg, d2, tv, features, d2_boxes, tv_boxes):
    """What each engine's box predictor reads for the given boxes: the box head's output (FPN, DC5),
    or res5 of the pooled res4 features averaged over space (C4: Res5ROIHeads)."""
    in_features = [features[f] for f in cfg.MODEL.ROI_HEADS.IN_FEATURES]
    if layout == "C4":
        return (d2.roi_heads._shared_roi_transform(in_features, d2_boxes).mean(dim=[2, 3]),
                tv.roi_heads.shared_roi_transform(features, tv_boxes, None).mean(dim=(2, 3)))
    return (d2.roi_heads.box_head(d2.roi_heads.box_pooler(in_features, d2_boxes)),
            tv.roi_heads.box_head(tv.roi_heads.box_roi_pool(features, tv_boxes, None)))


def _mask_logits(layout, cfg, d2, tv, features, boxes):
    """Both engines' mask logits for detectron2's detections ``boxes`` (C4: on res5 of res4's ROIAlign)."""
    in_features = [features[f] for f in cfg.MODEL.ROI_HEADS.IN_FEATURES]
    if layout == "C4":
        return (d2.roi_heads.mask_head.layers(d2.roi_heads._shared_roi_transform(in_features, [boxes])),
                tv.roi_heads.mask_predictor(tv.roi_heads.mask_head(
                    tv.roi_heads.shared_roi_transform(features, [boxes.tensor], None))))
    return (d2.roi_heads.mask_head.layers(d2.roi_heads.mask_pooler(in_features, [boxes])),
            tv.roi_heads.mask_predictor(tv.roi_heads.mask_head(tv.roi_heads.mask_roi_pool(features, [boxes.tensor], None))))


def _d2_inputs(cfg, dataset, *, is_train=False):
    dicts = load_coco_json(dataset.json_file, dataset.image_root, "equiv_test_d2")
    mapper = DatasetMapper(cfg, is_train=False)
    return [mapper(d) for d in dicts]


def test_detector_checkpoint_roundtrip(engines):
    _, d2, tv, _ = engines
    back = to_detectron2(tv.state_dict()).state
    ref = d2.state_dict()
    assert set(back) == set(ref)
    for k in ref:
        assert torch.equal(back[k], ref[k]), k


def test_preprocessing_matches(fpn_engines, dataset):
    cfg, d2, tv, _ = fpn_engines
    ours = COCOInstances(dataset, input_format=cfg.INPUT.FORMAT)
    for (h, w, kind), inp, i in zip(IMAGES, _d2_inputs(cfg, dataset), range(len(IMAGES))):
        image, _ = ours[i]
        assert tuple(image.shape[-2:]) == (h, w) == (inp["height"], inp["width"]), kind
        resized, _ = tv.transform.resize(image)
        assert resized.shape == inp["image"].shape, kind
        diff = (resized.int() - inp["image"].int()).abs().max().item()
        assert diff == 0, f"{kind}: resized pixels differ by up to {diff} grey levels from detectron2's PIL resize"
        # The normalised, padded batch the backbone sees.
        batch = tv.transform([resized])[0]
        d2_batch = d2.preprocess_image([inp])
        assert tuple(batch.tensors.shape) == tuple(d2_batch.tensor.shape)
        assert batch.image_sizes == [tuple(s) for s in d2_batch.image_sizes]


@pytest.mark.parametrize("index", range(len(IMAGES)))
def test_stages_match(engines, dataset, index):
    cfg, d2, tv, layout = engines
    inp = _d2_inputs(cfg, dataset)[index]
    with torch.no_grad():
        images = d2.preprocess_image([inp])
        features = d2.backbone(images.tensor)
        tv_features = tv.backbone(images.tensor)
        diffs = {"features": max((features[k] - tv_features[k]).abs().max().item() for k in features)}
        assert diffs["features"] <= 1e-4
        tv_images = TvImageList(images.tensor, [tuple(s) for s in images.image_sizes])

        # anchors
        rpn_in = [features[f] for f in cfg.MODEL.RPN.IN_FEATURES]
        d2_anchors = d2.proposal_generator.anchor_generator(rpn_in)
        tv_anchors = tv.rpn.anchor_generator.grid_anchors(rpn_in)
        for a, b in zip(d2_anchors, tv_anchors):
            assert a.tensor.shape == b.shape
        diffs["anchors"] = max((a.tensor - b).abs().max().item() for a, b in zip(d2_anchors, tv_anchors))
        assert diffs["anchors"] <= 1e-4
        odd_p6 = (images.tensor.shape[-1] // 32) % 2 == 1 or (images.tensor.shape[-2] // 32) % 2 == 1

        # proposals
        d2_props, _ = d2.proposal_generator(images, features, None)
        tv_props, _ = tv.rpn(tv_images, features)
        p, q = d2_props[0].proposal_boxes.tensor, tv_props[0]
        assert p.shape == q.shape and len(p) > 100
        diffs["proposals"] = (p - q).abs().max().item()
        assert diffs["proposals"] <= 1e-3

        # box head on detectron2's proposals
        box_feats, tv_feats = _box_features(layout, cfg, d2, tv, features, [x.proposal_boxes for x in d2_props], [p])
        d2_logits, d2_deltas = d2.roi_heads.box_predictor(box_feats)
        tv_logits, tv_deltas = tv.roi_heads.box_predictor(tv_feats)
        diffs["box logits"] = (torch.cat([tv_logits[:, 1:], tv_logits[:, :1]], 1) - d2_logits).abs().max().item()
        diffs["box deltas"] = (tv_deltas[:, 4:] - d2_deltas).abs().max().item()
        assert diffs["box logits"] <= 1e-5 and diffs["box deltas"] <= 1e-5

        # detections in original coordinates, mask logits and pasted masks
        d2_inst, _ = d2.roi_heads(images, features, d2_props)
        d2_final = detector_postprocess(d2_inst[0], inp["height"], inp["width"])
        result, _ = tv.roi_heads(features, [p], tv_images.image_sizes)
        tv_final = tv.transform.postprocess(result, tv_images.image_sizes, [(inp["height"], inp["width"])])[0]
        n = len(d2_final)
        assert n >= 20, f"only {n} detections: the test needs dozens"
        # By content (tests/detections.py): two scores equal up to rounding may come out in either order, and
        # RoIs on flat image regions (the grey image) have exactly equal scores, so which of those tied at the
        # last kept score a full list keeps is arbitrary in both engines.
        pairing = assert_same_detections(d2_final, tv_final, box_atol=1e-3, score_atol=1e-5,
                                         limit=cfg.TEST.DETECTIONS_PER_IMAGE, min_count=20, what="final detections")
        diffs["final boxes"], diffs["scores"] = pairing.box_diff, pairing.score_diff

        iou = None
        if cfg.MODEL.MASK_ON:
            boxes = d2_inst[0].pred_boxes
            d2_mask_logits, tv_mask_logits = _mask_logits(layout, cfg, d2, tv, features, boxes)
            diffs["mask logits"] = (tv_mask_logits[:, 1:] - d2_mask_logits).abs().max().item()
            assert diffs["mask logits"] <= 1e-5
            assert tv_final["masks"].dtype == d2_final.pred_masks.dtype == torch.bool
            assert tv_final["masks"].shape[2:] == d2_final.pred_masks.shape[1:]
            iou = assert_same_detections(d2_final, tv_final, box_atol=1e-3, score_atol=1e-5, mask_iou_min=0.99,
                                         limit=cfg.TEST.DETECTIONS_PER_IMAGE, what="pasted masks").min_mask_iou
        else:
            assert "masks" not in tv_final and not d2_final.has("pred_masks")
    print(f"{layout}, image {IMAGES[index]}: {len(p)} proposals, {n} detections, odd P6 grid: {odd_p6}, "
          f"mask IoU min {'-' if iou is None else f'{iou:.4f}'}; max |difference| per stage: "
          + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()))


def test_full_inference_matches(engines, dataset):
    """End to end from the image files, each engine on its own: the torchvision engine's own image loading
    and transform (its resize is PIL's, as detectron2's) against detectron2's DatasetMapper, then the whole
    model in eval mode. The same detections, matched by content: as many, boxes within 1e-3 px, scores
    within 1e-5, the same classes, pasted masks IoU >= 0.99."""
    cfg, d2, tv, _ = engines
    ours = COCOInstances(dataset, input_format=cfg.INPUT.FORMAT)
    inputs = _d2_inputs(cfg, dataset)
    with torch.no_grad():
        d2_out = d2(inputs)
        tv_out = tv([ours[i][0] for i in range(len(IMAGES))])
    for kind, a, b in zip(IMAGES, d2_out, tv_out):
        # Ties at the last kept score are cut arbitrarily (above): by content, with the cut allowed for.
        assert_same_detections(a["instances"], b, box_atol=1e-3, score_atol=1e-5,
                               mask_iou_min=0.99 if cfg.MODEL.MASK_ON else None,
                               limit=cfg.TEST.DETECTIONS_PER_IMAGE, min_count=20, what=kind)


def test_evaluators_give_the_same_numbers(fpn_engines, dataset):
    """detectron2's COCOEvaluator and ours, on the same detections: the same 12 bbox and 12 segm numbers."""
    cfg, d2, _, _ = fpn_engines
    name = "equiv_test_eval"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: load_coco_json(dataset.json_file, dataset.image_root, name))
        MetadataCatalog.get(name).set(json_file=dataset.json_file, image_root=dataset.image_root, evaluator_type="coco")
    load_coco_json(dataset.json_file, dataset.image_root, name)  # sets the category id mapping of `name`
    ours = COCOInstances(dataset, input_format=cfg.INPUT.FORMAT)
    evaluator = COCOEvaluator(name, output_dir=None)
    evaluator.reset()
    inputs = _d2_inputs(cfg, dataset)
    results = []
    rng = np.random.default_rng(0)
    for i, inp in enumerate(inputs):
        _, target = ours[i]
        # Detections: the ground truth, jittered, with masks that are the jittered boxes (mask area
        # differs from box area, so segm small/medium/large must use the mask's), plus false positives.
        gt = target["boxes"]
        boxes = torch.cat([gt + torch.from_numpy(rng.normal(0, 4, gt.shape)).float(),
                           torch.tensor([[5.0, 5.0, 60.0, 40.0], [20.0, 30.0, 29.0, 38.0]])])
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 2)
        h, w = inp["height"], inp["width"]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        labels = torch.cat([target["labels"], torch.tensor([1, 2])])
        scores = torch.from_numpy(rng.uniform(0.3, 1.0, len(boxes))).float()
        masks = torch.zeros((len(boxes), h, w), dtype=torch.bool)
        for k, b in enumerate(boxes.round().int().tolist()):
            masks[k, b[1]:b[3], b[0]:(b[0] + b[2]) // 2 + 1] = True
        inst = Instances((h, w), pred_boxes=Boxes(boxes), scores=scores, pred_classes=labels - 1, pred_masks=masks)
        evaluator.process([inp], [{"instances": inst}])
        results.extend(_to_coco({"boxes": boxes, "scores": scores, "labels": labels, "masks": masks[:, None]},
                                inp["image_id"], ours.category_ids))
    theirs = evaluator.evaluate()
    mine = coco_evaluate(ours, results, ["bbox", "segm"])
    for task in ("bbox", "segm"):
        for metric in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            a, b = theirs[task][metric], mine[task][metric]
            assert (np.isnan(a) and np.isnan(b)) or abs(a - b) < 1e-9, (task, metric, a, b)
    # AR is not printed by detectron2's table; pycocotools' 12 numbers equal too when the APs do,
    # since both evaluate the same results with the same COCOeval parameters.


def _training_targets(cfg, dataset, inputs):
    """Ground truth in the resized images' coordinates, for both engines."""
    ours = COCOInstances(dataset, input_format=cfg.INPUT.FORMAT, with_masks=True, mask_format="polygon")
    d2_batch, tv_images, tv_targets = [], [], []
    for i, inp in enumerate(inputs):
        _, t = ours[i]
        h, w = inp["height"], inp["width"]
        nh, nw = inp["image"].shape[-2:]
        sx, sy = nw / w, nh / h
        boxes = t["boxes"] * torch.tensor([sx, sy, sx, sy])
        polys = [[np.asarray(p, dtype=np.float64) * np.tile([sx, sy], len(p) // 2) for p in inst] for inst in t["polygons"]]
        inst = Instances((nh, nw), gt_boxes=Boxes(boxes), gt_classes=t["labels"] - 1, gt_masks=PolygonMasks(polys))
        d2_batch.append({"image": inp["image"], "instances": inst, "height": nh, "width": nw})
        tv_images.append(inp["image"])
        tv_targets.append({"boxes": boxes, "labels": t["labels"], "polygons": polys})
    return d2_batch, tv_images, tv_targets


def test_training_step_matches(engines, dataset):
    """Losses within 1e-5 relative and gradients within 1e-4 (of each tensor's largest), with sampling
    made deterministic: every anchor and every proposal is sampled."""
    cfg, d2_eval, _, layout = engines
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 1_000_000
    cfg.MODEL.RPN.POSITIVE_FRACTION = 1.0
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 100_000
    cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION = 1.0
    # Every proposal goes through the box head (and each foreground one through the mask head): 500 per image
    # instead of FPN's and DC5's 2000 (their sampling, not their count, is what the test is about).
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = min(cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN, 500)
    cfg.freeze()
    d2 = d2_build_model(cfg)
    d2.load_state_dict(d2_eval.state_dict())
    tv = tv_build_model(cfg)
    tv.load_state_dict(to_torchvision(d2.state_dict()).state, strict=True)
    d2.train()
    tv.train()
    inputs = _d2_inputs(cfg, dataset)[:3]
    d2_batch, tv_images, tv_targets = _training_targets(cfg, dataset, inputs)
    with EventStorage():
        d2_losses = d2(d2_batch)
    tv_losses = tv(tv_images, tv_targets)
    assert set(d2_losses) == set(tv_losses)
    for k in d2_losses:
        a, b = d2_losses[k].item(), tv_losses[k].item()
        assert abs(a - b) <= 1e-5 * max(abs(a), 1e-3), (k, a, b)
    sum(d2_losses.values()).backward()
    sum(tv_losses.values()).backward()
    d2_grads = {k: p.grad for k, p in d2.named_parameters() if p.grad is not None}
    tv_grads = dict(tv.named_parameters())
    mapped = to_torchvision(d2_grads).state
    checked = 0
    for k, ref in mapped.items():
        assert tv_grads[k].grad is not None, k
        got = tv_grads[k].grad
        if k.startswith("roi_heads.box_predictor.bbox_pred"):
            ref, got = ref[4:], got[4:]  # the background rows: zero in both, detectron2 has none
        if k.startswith("roi_heads.mask_predictor.mask_fcn_logits"):
            ref, got = ref[1:], got[1:]
        scale = ref.abs().max().clamp(min=1e-12)
        assert ((ref - got).abs().max() / scale) <= 1e-4, k
        checked += 1
    assert checked == sum(p.requires_grad for p in tv.parameters())
    print(f"{layout} losses (detectron2 | torchvision engine):",
          {k: (round(d2_losses[k].item(), 6), round(tv_losses[k].item(), 6)) for k in d2_losses})


# --- detector checkpoints between the engines ----------------------------------------------------------

def _cfg_with_weights(cfg, path, **changes):
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(path)
    for k, v in changes.items():
        node = cfg
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    cfg.freeze()
    return cfg


def test_model_zoo_pkl_loads_on_the_torchvision_engine(engines, tmp_path):
    """A detectron2 model-zoo .pkl (numpy arrays, old buffers included) through the restricted unpickler."""
    import pickle

    from resnet_backbones.weights.resolve import load_model_weights

    cfg, d2, _, _ = engines
    blobs = {k: v.numpy() for k, v in d2.state_dict().items()}
    blobs["pixel_mean"] = np.array(cfg.MODEL.PIXEL_MEAN, np.float32).reshape(3, 1, 1)
    blobs["pixel_std"] = np.array(cfg.MODEL.PIXEL_STD, np.float32).reshape(3, 1, 1)
    path = tmp_path / "model_final_abc.pkl"
    path.write_bytes(pickle.dumps({"model": blobs, "__author__": "Detectron2 Model Zoo"}))
    tv = tv_build_model(cfg)
    assert load_model_weights(tv, _cfg_with_weights(cfg, path)) == "detector"
    expected = to_torchvision(d2.state_dict()).state
    for k, v in tv.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_torchvision_engine_checkpoint_loads_on_the_detectron2_engine(engines, tmp_path):
    from resnet_backbones.d2.checkpoint import ResnetBackbonesCheckpointer

    cfg, d2, tv, _ = engines
    path = tmp_path / "model_final.pth"
    torch.save({"model": tv.state_dict(), "iteration": 7}, path)  # the torchvision engine's checkpoint form
    fresh = d2_build_model(cfg)
    ResnetBackbonesCheckpointer(fresh, cfg=_cfg_with_weights(cfg, path)).load(str(path))
    for k, v in d2.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_a_detector_of_another_class_count_is_refused_on_both_engines(engines, tmp_path):
    from resnet_backbones.d2.checkpoint import ResnetBackbonesCheckpointer
    from resnet_backbones.weights import WeightsError
    from resnet_backbones.weights.resolve import load_model_weights

    cfg, d2, _, _ = engines
    path = tmp_path / "d2.pth"
    torch.save({"model": d2.state_dict()}, path)
    small = _cfg_with_weights(cfg, path, **{"MODEL.ROI_HEADS.NUM_CLASSES": 3})
    with pytest.raises(WeightsError, match="80 classes but MODEL.ROI_HEADS.NUM_CLASSES=3"):
        load_model_weights(tv_build_model(small), small)
    with pytest.raises(WeightsError, match="80 classes but MODEL.ROI_HEADS.NUM_CLASSES=3"):
        ResnetBackbonesCheckpointer(d2_build_model(small), cfg=small).load(str(path))


def test_convert_weights_tool_writes_either_layout(fpn_engines, tmp_path):
    import importlib.util

    cfg, d2, tv, _ = fpn_engines
    spec = importlib.util.spec_from_file_location("convert_weights", os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "convert_weights.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src = tmp_path / "d2.pth"
    torch.save({"model": d2.state_dict()}, src)
    assert tool.main([str(src), str(tmp_path / "x.pth")]) == 2  # a detector needs --to
    assert tool.main([str(src), str(tmp_path / "tv.pth"), "--to", "torchvision"]) == 0
    assert tool.main([str(tmp_path / "tv.pth"), str(tmp_path / "back.pth"), "--to", "detectron2"]) == 0
    tv_state = torch.load(tmp_path / "tv.pth", weights_only=True)["model"]
    back = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    assert all(torch.equal(tv_state[k], v) for k, v in tv.state_dict().items())
    assert all(torch.equal(back[k], v) for k, v in d2.state_dict().items())


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("mask_format", ["bitmask", "polygon"])
def test_training_inputs_match_the_dataset_mapper(fpn_engines, dataset, tmp_path, mask_format, flip):
    """The torchvision engine's own data path (its dataset's item, flipped at the original size when the
    sampler says so, then its model's transform in training mode) against detectron2's
    DatasetMapper(is_train=True) (resize, then flip), with the random draws shared: each engine told the
    same short side and the same flip. Images equal pixel for pixel, boxes within 1e-3 px, classes equal,
    polygons within 1e-4 px, bitmasks equal (unflipped; flipped RLE masks, which detectron2 resizes after
    flipping with PIL's nearest filter, within 1 % of their pixels: "Knowingly different" in the README);
    for polygon annotations (the test images) and RLE ones (synthetic shapes), at two short sides."""
    from detectron2.data import transforms as T

    from resnet_backbones.data.synthetic import generate_split

    cfg, _, tv, _ = fpn_engines
    rle = DatasetSpec("equiv_rle", generate_split(str(tmp_path), "train", 4, seed=5), str(tmp_path / "train"))
    specs = [dataset] + ([rle] if mask_format == "bitmask" else [])  # detectron2 refuses RLE as polygons too
    checked = 0
    for short in (448, 600):
        cfg_s = cfg.clone()
        cfg_s.defrost()
        cfg_s.INPUT.MIN_SIZE_TRAIN, cfg_s.INPUT.RANDOM_FLIP, cfg_s.INPUT.MASK_FORMAT = (short,), "none", mask_format
        cfg_s.freeze()
        mapper = DatasetMapper(cfg_s, is_train=True)
        # The shared draw: detectron2 told to flip every image (its RandomFlip draws otherwise), ours by the item.
        mapper.augmentations = T.AugmentationList(
            [T.ResizeShortestEdge((short,), cfg_s.INPUT.MAX_SIZE_TRAIN, "choice")]
            + ([T.RandomFlip(prob=1.0, horizontal=True, vertical=False)] if flip else []))
        transform = tv_build_model(cfg_s).transform.train()
        for spec in specs:
            ours = COCOInstances(spec, input_format=cfg_s.INPUT.FORMAT, with_masks=True, mask_format=mask_format)
            for i, d in enumerate(load_coco_json(spec.json_file, spec.image_root, spec.name + "_mapper")):
                theirs = mapper(d)
                image, target = ours[(i, flip)]
                image, target = transform.resize(image, target)
                inst = theirs["instances"]
                assert image.shape == theirs["image"].shape
                assert torch.equal(image, theirs["image"]), (spec.name, i, short, flip)
                assert torch.allclose(target["boxes"], inst.gt_boxes.tensor, atol=1e-3)
                assert torch.equal(target["labels"] - 1, inst.gt_classes)
                if mask_format == "bitmask":
                    a, b = target["masks"].bool(), inst.gt_masks.tensor
                    if flip and spec is rle:
                        assert a.shape == b.shape and (a ^ b).sum() <= 0.01 * b.sum(), (i, short)
                    else:
                        assert torch.equal(a, b), (spec.name, i, short, flip)
                else:
                    assert len(target["polygons"]) == len(inst.gt_masks.polygons)
                    for pa, pb in zip(target["polygons"], inst.gt_masks.polygons):
                        assert all(np.allclose(p, q, atol=1e-4) for p, q in zip(pa, pb))
                checked += len(inst)
    assert checked >= 20
