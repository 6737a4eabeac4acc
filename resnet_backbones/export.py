"""Export a trained detector to TorchScript or ONNX (FP32, or int8 quantized with calibration), and run the
exported file with the eager model's own pre- and post-processing.

What is exported (:class:`DetectorGraph`): a batch of N images in, their detections out, for any image
size; N is fixed when exporting (``batch_size``, 1 by default), as in detectron2's and torchvision's traced
exports. Inputs are the normalised images zero-padded to one size, ``images`` (N, 3, H, W) float32, and
each image's size before padding, ``image_sizes`` (N, 2) int64 (height, width). Outputs are the N images'
detections one after the other: ``boxes`` (K, 4) XYXY in the resized frame, ``scores`` (K,), ``labels``
(K,) int64 (1-based; 0 is the background), for Mask R-CNN ``masks`` (K, 1, M, M), each detection's mask
probabilities at the head's resolution (28 x 28 for FPN), not pasted; and ``counts`` (N,) int64, how many
of the K rows belong to each image (image i has rows ``counts[:i].sum()`` to ``counts[:i+1].sum()``). The
backbone and the RPN's convolutions run on the batch; proposals and ROI heads image by image (the loop is
unrolled when tracing, hence the fixed N). Both formats are traced from the torchvision engine's modules
(detectron2 exports by tracing too, with a fixed batch).

What stays outside (:class:`ExportedDetector`): reading the image, the resize to INPUT.MIN_SIZE_TEST /
MAX_SIZE_TEST (PIL's bilinear filter, as detectron2's ResizeShortestEdge: an op no exporter has), the
normalisation and padding, and after the graph detectron2's ``detector_postprocess``: boxes scaled to
the input image, clipped, empty ones dropped, masks pasted into the image at threshold 0.5. These are the
eager model's own functions (:class:`resnet_backbones.tv.parity.Detectron2Transform`), rebuilt from the
``config.yaml`` written beside the exported file, so an exported model and the eager one see the same
pixels and report in the same frame. To paste masks yourself:
:func:`resnet_backbones.tv.parity.paste_masks_like_detectron2` (``masks[:, 0]``, the boxes in image
pixels, the image size, 0.5).

:class:`ExportedDetector` (and :class:`resnet_backbones.Predictor` on it) take a list of any length: N
images per run, padded to the largest of them as the eager model pads a batch; a last, shorter group is
filled with copies of its last image (the padded size stays that of the group), whose detections are dropped.
"""
import copy
import inspect
import json
import logging
import os
import tempfile
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["FORMATS", "DetectorGraph", "ExportedDetector", "export_detector"]

logger = logging.getLogger("resnet_backbones")

FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx", "onnx-int8": "model_int8.onnx"}
PRECISION = {"torchscript": "fp32", "onnx": "fp32", "onnx-int8": "int8"}
ONNX_OPSET = 17  # RoiAlign with aligned=True needs 16


class DetectorGraph(nn.Module):
    """What the exported file computes: the backbone, the RPN and the ROI heads of a torchvision-engine
    model (``GeneralizedRCNN``) on a preprocessed batch, as its ``forward`` computes them between the
    transform and its postprocess (see the module docstring for inputs and outputs). The proposals and
    the ROI heads run one image at a time, so that no per-image count is frozen into a traced graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone, self.rpn, self.roi_heads = model.backbone, model.rpn, model.roi_heads
        self.mask_on = model.roi_heads.has_mask()

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = self.backbone(images)
        logits, deltas, anchors = self.rpn.predict(features)
        results = []
        for i in range(images.shape[0]):  # unrolled by the tracer: the batch size is the traced one
            size = [(image_sizes[i, 0], image_sizes[i, 1])]
            proposals, _ = self.rpn.find_top_proposals(
                anchors, [x[i:i + 1] for x in logits], [x[i:i + 1] for x in deltas], size)
            results.append(self.roi_heads({k: v[i:i + 1] for k, v in features.items()}, proposals, size)[0][0])
        names = ["boxes", "scores", "labels"] + (["masks"] if self.mask_on else [])
        out = tuple(torch.cat([r[name] for r in results]) for name in names)
        # How many rows each image has, traced from the tensors (not a Python int, which would be frozen).
        counts = torch.stack([torch.ones_like(r["scores"], dtype=torch.int64).sum() for r in results])
        return out + (counts,)


def _output_names(mask_on: bool) -> List[str]:
    return ["boxes", "scores", "labels"] + (["masks"] if mask_on else []) + ["counts"]


def _example(size_divisibility: int, batch_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """A traced example: random images of unremarkable, unequal sizes, padded to one (the graph is
    size-agnostic)."""
    sizes = [(240 - 16 * (i % 3), 320 - 32 * (i % 2)) for i in range(batch_size)]
    pad = max(size_divisibility, 1)
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(batch_size, 3, -(-240 // pad) * pad, -(-320 // pad) * pad)
    for image, (h, w) in zip(images, sizes):
        image[:, :h, :w] = torch.randn(3, h, w, generator=generator)
    return images, torch.tensor(sizes, dtype=torch.int64)


def export_detector(cfg, model: nn.Module, output_dir: str, fmt: str, class_names: Optional[List[str]] = None,
                    batch_size: int = 1, calibration_images: Optional[List[torch.Tensor]] = None,
                    calibration_source: Optional[str] = None) -> str:
    """Write ``model`` (a torchvision-engine detector with its weights loaded; left as it is: a copy is
    exported) to ``output_dir`` as ``fmt`` ("torchscript", "onnx" or "onnx-int8"), taking ``batch_size``
    images per run, with the ``config.yaml`` its wrapper rebuilds the pre- and post-processing from and an
    ``export.json`` naming the format, its precision, the batch size, the outputs and ``class_names`` (of
    classes 1..NUM_CLASSES). ``cfg`` is the torchvision engine's (``resnet_backbones.config.load_config(...,
    use_detectron2=False)``), whose dump the wrapper reads back. Returns the model path.

    "onnx-int8" is the ONNX graph statically quantized by onnxruntime (:func:`_quantize_int8`), calibrated
    on ``calibration_images`` ((3, H, W) 0-255 images, as the wrapper takes them; ``calibration_source``
    says where they came from, for export.json)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: one of {sorted(FORMATS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size!r}: a whole number of images, 1 or more")
    if fmt == "onnx-int8" and not calibration_images:
        raise ConfigError("--format onnx-int8 needs calibration images: --calibrate N (the first N images of "
                          "DATASETS.TRAIN; 64 were measured on the main job, README \"Export: TorchScript and ONNX\")")
    from .inference import inference_model

    os.makedirs(output_dir, exist_ok=True)
    # MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE: the copy with batch norms folded (exact), as evaluation runs.
    model = inference_model(cfg, copy.deepcopy(model).eval().float().cpu())
    graph = DetectorGraph(model).eval()
    example = _example(model.backbone.size_divisibility, batch_size)
    names = _output_names(graph.mask_on)
    path = os.path.join(output_dir, FORMATS[fmt])
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer's notes on the constants it records (the box coder's clip value, top-k bounds) and on
        # the Python branches it fixes (none of which depends on the image: tests/test_export.py checks
        # other sizes against the eager model).
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            torch.jit.trace(graph, example, check_trace=False).save(path)
        else:
            try:
                import onnx  # noqa: F401
            except ImportError as e:
                raise ConfigError("ONNX export needs onnx: pip install 'resnet_backbones[export]'") from e
            # The TorchScript-based exporter (torch >= 2.5 defaults to the torch.export one, which cannot
            # take the per-image data-dependent shapes of detection).
            legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
            with tempfile.TemporaryDirectory() as tmp:
                onnx_path = path if fmt == "onnx" else os.path.join(tmp, "model_fp32.onnx")
                torch.onnx.export(graph, example, onnx_path, opset_version=ONNX_OPSET,
                                  input_names=["images", "image_sizes"], output_names=names, **legacy,
                                  dynamic_axes={"images": {2: "height", 3: "width"},
                                                **{n: {0: "detections"} for n in names if n != "counts"}})
                if fmt == "onnx-int8":
                    calibration = _quantize_int8(onnx_path, path, model.transform, calibration_images, batch_size)
                    calibration["source"] = calibration_source
    with open(os.path.join(output_dir, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    with open(os.path.join(output_dir, "export.json"), "w") as f:
        json.dump({"format": fmt, "file": FORMATS[fmt], "precision": PRECISION[fmt], "batch_size": batch_size,
                   "inputs": ["images", "image_sizes"], "outputs": names,
                   "size_divisibility": model.backbone.size_divisibility, "class_names": class_names,
                   "onnx_opset": ONNX_OPSET if fmt.startswith("onnx") else None,
                   "calibration": calibration if fmt == "onnx-int8" else None}, f, indent=1)
    logger.info("exported %s to %s", fmt, path)
    return path


# The int8 export's layers kept in FP32, by their ONNX node names (the predictors: _quantize_int8).
FP32_LAYERS = ("/cls_logits", "/bbox_pred", "/cls_score", "/mask_fcn_logits")


def _quantize_int8(fp32_path: str, path: str, transform, images: List[torch.Tensor], batch_size: int) -> dict:
    """onnxruntime's static quantization of the exported FP32 graph (``quantize_static``): QDQ format, the
    convolutions and fully connected layers in int8 (weights signed, per output channel; activations
    unsigned, per tensor, their ranges the min-max over the calibration batches), everything else (RoIAlign,
    NMS, the box decoding) left in FP32. The calibration batches are the images through the eager model's
    own transform (resize, normalisation, padding), ``batch_size`` at a time as the graph takes them.
    Returns what export.json records of it."""
    try:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
    except ImportError as e:
        raise ConfigError("an int8 export needs onnxruntime: pip install 'resnet_backbones[export]'") from e
    feeds = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            group = list(images[start:start + batch_size])
            group += [group[-1]] * (batch_size - len(group))
            batch, _ = transform(group)
            feeds.append({"images": batch.tensors.numpy(),
                          "image_sizes": torch.tensor(batch.image_sizes, dtype=torch.int64).numpy()})

    class _Batches(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter(feeds)

        def get_next(self):
            return next(self._feeds, None)

    import onnx

    # The predictors (the RPN's objectness and deltas, the box head's class scores and deltas, the mask
    # logits) stay FP32: a few small layers whose int8 rounding moves scores and boxes directly.
    keep = [node.name for node in onnx.load(fp32_path).graph.node
            if node.op_type in ("Conv", "Gemm", "MatMul") and any(p in node.name for p in FP32_LAYERS)]
    settings = {"quant_format": "QDQ", "op_types": ["Conv", "MatMul", "Gemm"], "weights": "int8, per channel",
                "activations": "uint8, per tensor", "method": "MinMax", "images": len(images),
                "fp32_layers": len(keep)}
    logger.info("quantizing to int8, calibrated on %d images", len(images))
    quantize_static(fp32_path, path, _Batches(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=settings["op_types"], activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=keep)
    return settings


class ExportedDetector(nn.Module):
    """An exported detector with the eager model's pre- and post-processing: called on a list of (3, H, W)
    0-255 images in INPUT.FORMAT order, it returns what the eager model returns in eval mode (one dict
    per image: ``boxes`` in the image's pixels, ``scores``, ``labels``, ``masks`` pasted, (K, 1, H, W)
    bool). TorchScript runs in torch, ONNX (FP32 or int8) in onnxruntime (CPU)."""

    def __init__(self, export_dir: str):
        super().__init__()
        from .config import load_config
        from .tv.model import build_transform

        meta_path = os.path.join(export_dir, "export.json")
        if not os.path.isfile(meta_path):
            raise ConfigError(f"{export_dir} holds no export.json: export a model there with tools/export_model.py")
        with open(meta_path) as f:
            meta = json.load(f)
        if "batch_size" not in meta:
            raise ConfigError(f"{export_dir} was exported by an earlier resnet_backbones (one image per graph, no "
                              "'counts' output): export it again with tools/export_model.py")
        self.format, self.output_names, self.batch_size = meta["format"], meta["outputs"], meta["batch_size"]
        self.class_names: Optional[List[str]] = meta.get("class_names")
        self.cfg = load_config(os.path.join(export_dir, "config.yaml"), ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"],
                               use_detectron2=False)
        self.transform = build_transform(self.cfg, meta["size_divisibility"]).eval()
        path = os.path.join(export_dir, meta["file"])
        if self.format == "torchscript":
            self.graph = torch.jit.load(path, map_location="cpu")
            self._session = None
        else:
            try:
                import onnxruntime
            except ImportError as e:
                raise ConfigError("running an ONNX export needs onnxruntime: pip install "
                                  "'resnet_backbones[export]'") from e
            self.graph = None
            self._session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.eval()

    def train(self, mode: bool = True) -> "ExportedDetector":
        """Only eval mode: an exported graph infers (``train(False)`` is what evaluation loops call)."""
        if mode:
            raise RuntimeError("an exported detector cannot train: train the eager model and export it again")
        return super().train(False)

    def _run(self, images: torch.Tensor, sizes: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
        """The graph on one padded batch: its outputs split into one dict per image."""
        if self._session is None:
            outputs = self.graph(images, sizes)
        else:
            outputs = [torch.from_numpy(o) for o in self._session.run(
                None, {"images": images.numpy(), "image_sizes": sizes.numpy()})]
        named = dict(zip(self.output_names, outputs))
        counts = named.pop("counts").tolist()
        split = {k: v.split(counts) for k, v in named.items()}
        return [{k: v[i] for k, v in split.items()} for i in range(len(counts))]

    @torch.no_grad()
    def forward(self, images: List[torch.Tensor]) -> List[Dict[str, torch.Tensor]]:
        results = []
        for start in range(0, len(images), self.batch_size):
            group = list(images[start:start + self.batch_size])
            real = len(group)
            group += [group[-1]] * (self.batch_size - real)  # the graph's fixed N; the padded size is unchanged
            batch, _ = self.transform(group)
            sizes = torch.tensor(batch.image_sizes, dtype=torch.int64)
            detections = self._run(batch.tensors, sizes)[:real]
            results.extend(self.transform.postprocess(detections, batch.image_sizes[:real],
                                                      [tuple(im.shape[-2:]) for im in group[:real]]))
        return results
