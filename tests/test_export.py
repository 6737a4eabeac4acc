"""TorchScript and ONNX export (resnet_backbones.export, tools/export_model.py): the exported FPN, C4 and DC5
Faster/Mask R-CNN give the eager model's detections at image sizes other than the traced one, images
without a detection included, in batches of more than one; the Predictor serves an export. (The COCO AP of an
exported trained model against the eager one: tests/test_train.py, on the main job's model and on a short
Mask R-CNN training, bbox and segm.)"""
import json
import os
import sys

import pytest
import torch

from resnet_backbones import Predictor
from resnet_backbones.config import ConfigError, load_config
from resnet_backbones.export import FP32_LAYERS, ONNX_OPSET, ExportedDetector, export_detector
from resnet_backbones.modeling import FrozenBatchNorm2d
from resnet_backbones.tv.model import build_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from detections import assert_same_detections  # noqa: E402

pytest.importorskip("onnxruntime", reason="pip install 'resnet_backbones[export]' (CI installs it)")

# Every proposal kept (score threshold 0), so that random weights give 100 detections per image.
SMALL = ["INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "160", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
# Image sizes unlike the traced example (240 x 320), portrait and landscape.
SIZES = [(70, 90), (120, 60), (96, 160)]
# ONNX Runtime's float32 kernels sum in another order than oneDNN's: boxes move by float rounding, most
# in the deep dilated R-50 (measured 2.3e-3 px at most with random weights; trained FPN models: 1e-5 px).
BOX_ATOL = {"fpn": 1e-3, "c4": 1e-3, "dc5": 5e-3, "vgg": 1e-3}
# Scores after the softmax: rounding of the logits moves them by ~1e-7; 1e-5 holds on every CPU kind met
# (AVX2-only and AVX-512 EPYC, Xeon with AMX; 1 and 2 threads).
SCORE_ATOL = 1e-5
CASES = {
    "fpn": "quick_schedules/mask_rcnn_R18_synthetic.yaml",
    "c4": "quick_schedules/mask_rcnn_R50_C4_synthetic.yaml",
    "dc5": "quick_schedules/faster_rcnn_R50_DC5_synthetic.yaml",
    # The paper's VGG-16 layout (conv5_3, fc6/fc7 box head) at a quarter of its width: the full width's
    # 138 M parameters made it the slowest case (46 s for ONNX) with nothing more to export.
    "vgg": "quick_schedules/faster_rcnn_VGG16_synthetic.yaml",
}


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in SIZES]


def _model(name, *opts):
    cfg = load_config(CASES[name], [*SMALL, "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", *opts], use_detectron2=False)
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


def _eager(model, images):
    with torch.no_grad():
        return [model([image.clone()])[0] for image in images]  # one at a time, as the export runs


@pytest.mark.parametrize("layout", sorted(CASES))
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_gives_the_eager_detections(layout, fmt, images, tmp_path):
    cfg, model = _model(layout)
    export_detector(cfg, model, str(tmp_path), fmt, class_names=["a", "b", "c"])
    meta = json.load(open(tmp_path / "export.json"))
    assert meta["format"] == fmt and meta["batch_size"] == 1
    assert meta["outputs"][-2:] == ["masks" if cfg.MODEL.MASK_ON else "labels", "counts"]
    exported = ExportedDetector(str(tmp_path))
    for image, ref, out in zip(images, _eager(model, images), exported(images)):
        assert sorted(out) == sorted(ref) and len(ref["scores"]) == 100
        if fmt == "torchscript":  # the same kernels: bit for bit, in the same order
            assert all(torch.equal(out[k], ref[k]) for k in ref)
            continue
        if "masks" in ref:
            assert out["masks"].shape == ref["masks"].shape == (100, 1) + tuple(image.shape[-2:])
        # By content (tests/detections.py): near-equal scores may come out in the other order. Masks are
        # pasted at 0.5: a pixel whose probability is within rounding of 0.5 may flip.
        assert_same_detections(ref, out, box_atol=BOX_ATOL[layout], score_atol=SCORE_ATOL, mask_mismatch=1e-3,
                               limit=100, what=f"{fmt} {layout}")


@pytest.mark.parametrize("layout", ["fpn", "c4"])
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_batched_export_gives_the_eager_batch(layout, fmt, images, tmp_path):
    """A graph of 2 images on 3 images: the first two as one padded batch, the third filled with a copy of
    itself; each as the eager model computes the same groups. Score threshold 0.3: a different number of
    detections per image (not the 100 of every image at 0), so no count traced from the example holds."""
    cfg, model = _model(layout, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.3")
    export_detector(cfg, model, str(tmp_path), fmt, batch_size=2)
    exported = ExportedDetector(str(tmp_path))
    assert exported.batch_size == 2
    with torch.no_grad():
        refs = model([im.clone() for im in images[:2]]) + model([images[2].clone()])
    outs = exported(images)
    assert len(outs) == 3 and len({len(r["scores"]) for r in refs}) == 3, [len(r["scores"]) for r in refs]
    for image, ref, out in zip(images, refs, outs):
        assert 0 < len(ref["scores"]) < 100
        assert out["masks"].shape[1:] == ref["masks"].shape[1:] == (1,) + tuple(image.shape[-2:])
        # Not bit for bit even in TorchScript: the graph's ROI heads run image by image, the eager batch's on
        # the RoIs of both images at once (other matmul blockings; measured 3e-4 px in C4's res5 head). So
        # two detections whose scores differ by 1e-7 may swap (seen on an Intel Xeon with AMX), and one
        # within rounding of the 0.3 threshold may be kept by one run only: compared by content.
        assert_same_detections(ref, out, box_atol=BOX_ATOL[layout], score_atol=SCORE_ATOL, mask_mismatch=1e-3,
                               score_floor=0.3, min_count=1, what=f"{fmt} {layout} batch")
    # Padding to the group's size moves detections: the batch differs from one image at a time.
    assert not torch.equal(outs[0]["boxes"], _eager(model, images[:1])[0]["boxes"])
    with pytest.raises(ConfigError, match="batch-size"):
        export_detector(cfg, model, str(tmp_path), fmt, batch_size=0)


class _Pooler(torch.nn.Module):
    """The FPN box pooler on tensors (one image), as a traced graph calls it."""

    def __init__(self):
        super().__init__()
        from resnet_backbones.tv.parity.poolers import MultiLevelRoIAlign

        self.pool = MultiLevelRoIAlign(["p2", "p3", "p4", "p5"], [4, 8, 16, 32], 7, 0, True)

    def forward(self, p2, p3, p4, p5, boxes):
        return self.pool({"p2": p2, "p3": p3, "p4": p4, "p5": p5}, [boxes])


def _boxes_per_level(counts):
    """Square boxes whose sqrt(area) sends ``counts[i]`` of them to level i (56, 112, 224, 448 px: p2..p5)."""
    out = [[8.0 + j, 8.0 + j, 8.0 + j + side, 8.0 + j + side] for side, n in zip((56, 112, 224, 448), counts)
           for j in range(n)]
    return torch.tensor(out).reshape(-1, 4)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_the_traced_pooler_takes_any_number_of_boxes_per_level(fmt, tmp_path):
    """Traced with exactly one box per level, then run with none, one and several: no count is frozen
    (a traced index_put of one row was: the exported detector then failed on another image)."""
    pooler = _Pooler().eval()
    g = torch.Generator().manual_seed(0)
    feats = tuple(torch.randn(1, 4, 512 // s, 512 // s, generator=g) for s in (4, 8, 16, 32))
    example = _boxes_per_level([1, 1, 1, 1])
    if fmt == "torchscript":
        graph = torch.jit.trace(pooler, feats + (example,), check_trace=False)
        run = graph
    else:
        import onnxruntime

        path = str(tmp_path / "pooler.onnx")
        torch.onnx.export(pooler, feats + (example,), path, opset_version=ONNX_OPSET, dynamo=False,
                          input_names=["p2", "p3", "p4", "p5", "boxes"], dynamic_axes={"boxes": {0: "n"}})
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

        def run(*args):
            names = ["p2", "p3", "p4", "p5", "boxes"]
            return torch.from_numpy(session.run(None, {n: a.numpy() for n, a in zip(names, args)})[0])

    for counts in ([1, 1, 1, 1], [0, 3, 1, 2], [2, 0, 0, 5], [0, 0, 0, 0]):
        boxes = _boxes_per_level(counts)
        ref = pooler(*feats, boxes)
        assert ref.shape == (sum(counts), 4, 7, 7)
        assert torch.allclose(run(*feats, boxes), ref, atol=1e-5)


def test_optimize_for_inference_exports_the_folded_model(images, tmp_path):
    from resnet_backbones.inference import inference_model

    cfg, model = _model("fpn", "MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE", "True")
    export_detector(cfg, model, str(tmp_path), "torchscript")
    folded = inference_model(cfg, model)

    def norms(m):
        return sum(isinstance(x, (FrozenBatchNorm2d, torch.nn.BatchNorm2d)) for x in m.backbone.modules())

    assert norms(model) == 20 and norms(folded) == 0  # R18's norms, all folded into their convs
    for ref, out in zip(_eager(folded, images), ExportedDetector(str(tmp_path))(images)):
        assert all(torch.equal(out[k], ref[k]) for k in ref)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_images_larger_than_the_traced_example(fmt, tmp_path):
    """COCO's test size (800 x 1216 after the resize), above the 240 x 320 example the graph was traced at:
    more anchors per level than the RPN's top-k, so every level is cut by top-k."""
    cfg, model = _model("fpn", "INPUT.MIN_SIZE_TEST", "800", "INPUT.MAX_SIZE_TEST", "1333")
    export_detector(cfg, model, str(tmp_path), fmt)
    image = [torch.randint(0, 256, (3, 400, 608), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))]
    ref, out = _eager(model, image)[0], ExportedDetector(str(tmp_path))(image)[0]
    assert len(ref["scores"]) == 100
    if fmt == "torchscript":
        assert all(torch.equal(out[k], ref[k]) for k in ref)
    else:
        assert_same_detections(ref, out, box_atol=1e-3, score_atol=SCORE_ATOL, mask_mismatch=1e-3, limit=100)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_image_without_detections_gives_empty_outputs(fmt, images, tmp_path):
    cfg, model = _model("fpn", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.999")
    assert all(len(r["scores"]) == 0 for r in _eager(model, images))
    export_detector(cfg, model, str(tmp_path), fmt)
    for out in ExportedDetector(str(tmp_path))(images):
        assert out["boxes"].shape == (0, 4) and out["scores"].shape == (0,) and out["labels"].shape == (0,)
        assert out["masks"].shape[:2] == (0, 1)


def test_predictor_serves_an_export_and_bad_folders_are_refused(images, tmp_path):
    cfg, model = _model("fpn")
    export_detector(cfg, model, str(tmp_path), "onnx", class_names=["circle", "square", "triangle"])
    predictor = Predictor.from_export(str(tmp_path), batch_size=2)
    rgb = images[0].permute(1, 2, 0).numpy()
    d = predictor(rgb)
    ref = _eager(model, images[:1])[0]
    assert_same_detections(ref, d, box_atol=1e-3, score_atol=SCORE_ATOL, mask_mismatch=1e-3, limit=100)
    assert d.class_names == [["circle", "square", "triangle"][int(c)] for c in d.classes]
    assert len(predictor([rgb, rgb, rgb])) == 3
    with pytest.raises(ConfigError, match="no export.json"):
        ExportedDetector(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="one of"):
        export_detector(cfg, model, str(tmp_path), "caffe2")
    with pytest.raises(RuntimeError, match="cannot train"):
        ExportedDetector(str(tmp_path)).train()


def test_an_int8_export_is_quantized_served_and_records_its_calibration(images, tmp_path):
    """``onnx-int8``: the ONNX graph with onnxruntime's QDQ int8 convolutions and fully connected layers (the
    predictors kept FP32), run by the same wrapper and the Predictor, its precision and calibration in
    export.json. Its COCO AP against the eager model is checked on the trained main job (tests/test_train.py):
    random weights give no AP to compare. The tool's --calibrate errors name the fix."""
    import onnx

    cfg, model = _model("fpn")
    with pytest.raises(ConfigError, match="--calibrate N"):
        export_detector(cfg, model, str(tmp_path), "onnx-int8")
    export_detector(cfg, model, str(tmp_path), "onnx-int8", class_names=["a", "b", "c"],
                    calibration_images=images[:2], calibration_source="two test images")
    meta = json.load(open(tmp_path / "export.json"))
    assert (meta["format"], meta["file"], meta["precision"]) == ("onnx-int8", "model_int8.onnx", "int8")
    assert meta["calibration"]["images"] == 2 and meta["calibration"]["source"] == "two test images"
    nodes = onnx.load(str(tmp_path / "model_int8.onnx")).graph.node
    quantized = {n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}  # a weight read through one
    convs = [n for n in nodes if n.op_type in ("Conv", "Gemm")]
    int8 = [n.name for n in convs if n.input[1] in quantized]
    fp32 = [n.name for n in convs if n.input[1] not in quantized]
    assert len(int8) > 20 and fp32 and all(any(p in n for p in FP32_LAYERS) for n in fp32), fp32
    outs = ExportedDetector(str(tmp_path))(images)
    assert [len(o["scores"]) for o in outs] == [100] * len(images)
    assert all(o["masks"].shape[-2:] == image.shape[-2:] for o, image in zip(outs, images))
    assert len(Predictor.from_export(str(tmp_path))(images[0].permute(1, 2, 0).numpy())) == 100

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    from export_model import calibration_images

    with pytest.raises(ConfigError, match="needs --calibrate N"):
        calibration_images(cfg, "onnx-int8", None)
    with pytest.raises(ConfigError, match="drop it"):
        calibration_images(cfg, "onnx", 8)
