"""The rows of ``tools/benchmark.py``: what each variant builds and runs (backbones, one detector
training step, one detector evaluation pass), and how the table names it. Every backbone row is the same
architecture (ResNet-FPN, FrozenBN, FREEZE_AT 2, one stride position); rows differ only in what
:func:`describe` says."""
import torch

__all__ = ["VARIANTS", "DETECTOR_VARIANTS", "EVAL_VARIANTS", "MODES", "half_dtype", "build_backbone",
           "build_detector", "detector_step", "detector_eval", "describe"]

# name: (modes, builder shown in the table, inference memory format / training memory format, compiled)
VARIANTS = {
    "d2": ("inference train", "detectron2 build_resnet_fpn_backbone"),
    "d2-amp": ("inference train", "detectron2 build_resnet_fpn_backbone"),
    "torchvision": ("inference train", "torchvision resnet_fpn_backbone"),
    "ours": ("inference train", "build_resnet_fpn"),
    "ours-nofold": ("train", "build_resnet_fpn, FrozenBN folding off"),
    "ours-opt": ("inference train", "build_resnet_fpn + optimize_for_inference (inf) / channels_last (train)"),
    "ours-opt-amp": ("inference train", "build_resnet_fpn + optimize_for_inference (inf) / channels_last (train)"),
    "ours-compiled": ("inference", "ours-opt + compile_for_inference"),
    "ours-compiled-amp": ("inference", "ours-opt + compile_for_inference"),
    "ours-ckpt": ("train", "build_resnet_fpn + activation checkpointing, every stage"),
    "ours-ckpt-res34": ("train", "build_resnet_fpn + activation checkpointing, res3 and res4"),
}
DETECTOR_VARIANTS = ("d2-engine", "d2-engine-amp", "tv-engine", "tv-engine-amp")
EVAL_VARIANTS = ("d2-engine", "tv-engine", "tv-engine-opt", "tv-engine-opt-amp", "d2-engine-opt-amp",
                 "tv-export-torchscript", "tv-export-onnx", "tv-export-onnx-int8")
# Exported with OPTIMIZE_FOR_INFERENCE (batch norms folded; resnet_backbones.export), run by their wrapper.
EXPORT_FORMATS = {"tv-export-torchscript": "torchscript", "tv-export-onnx": "onnx",
                  "tv-export-onnx-int8": "onnx-int8"}
MODES = ("inference", "train", "detector", "detector-eval")


def half_dtype(device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def build_backbone(variant: str, depth: int, stride_in_1x1: bool):
    """The variant's ResNet-FPN: FrozenBN everywhere, stem and res2 frozen, the given stride position."""
    if variant.startswith("d2"):
        from detectron2.layers import ShapeSpec
        from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone

        from resnet_backbones.config import load_config

        cfg = load_config("faster_rcnn_R50.yaml", ["MODEL.RESNETS.DEPTH", str(depth), "MODEL.WEIGHTS", "",
                                                   "MODEL.RESNETS.STRIDE_IN_1X1", str(stride_in_1x1),
                                                   "MODEL.RESNETS.NORM", "FrozenBN", "MODEL.BACKBONE.FREEZE_AT", "2",
                                                   "MODEL.RESNETS.RES2_OUT_CHANNELS", "64" if depth < 50 else "256"],
                          use_detectron2=True)
        return build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    if variant == "torchvision":
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

        if stride_in_1x1:
            raise ValueError("torchvision's ResNet has no stride-in-1x1 option")
        return resnet_fpn_backbone(backbone_name=f"resnet{depth}", weights=None, trainable_layers=3)
    from resnet_backbones.modeling import build_resnet_fpn, set_activation_checkpointing, set_frozen_bn_folding

    model = build_resnet_fpn(depth=depth, norm="FrozenBN", freeze_at=2, stride_in_1x1=stride_in_1x1)
    if variant == "ours-nofold":
        set_frozen_bn_folding(model, False)
    if variant == "ours-ckpt":
        set_activation_checkpointing(model)
    if variant == "ours-ckpt-res34":
        set_activation_checkpointing(model, stages=("res3", "res4"))
    return model


def build_detector(engine: str, depth: int, device, config: str, overrides):
    """(model, cfg) of ``config`` on an engine ("d2" or "tv"), random weights with trained-looking FrozenBN
    statistics (with identity statistics a random-init R50 produces huge activations and detectron2
    stops on non-finite predictions)."""
    from resnet_backbones.config import load_config

    overrides = ["MODEL.RESNETS.DEPTH", str(depth), "MODEL.WEIGHTS", "", "MODEL.DEVICE", device.type, *overrides]
    if engine == "d2":
        from detectron2.modeling import build_model

        import resnet_backbones  # noqa: F401  (registers our backbone)

        cfg = load_config(config, overrides, use_detectron2=True)
        model = build_model(cfg)
    else:
        from resnet_backbones.tv.model import build_model

        cfg = load_config(config, overrides, use_detectron2=False)
        model = build_model(cfg).to(device)
    g = torch.Generator().manual_seed(0)
    for name, buf in model.backbone.named_buffers():
        if name.endswith("norm.weight"):
            buf.copy_(torch.rand(buf.shape, generator=g) * 0.4 + 0.2)
        elif name.endswith("norm.running_var"):
            buf.copy_(torch.rand(buf.shape, generator=g) * 1.5 + 0.5)
        elif name.endswith(("norm.bias", "norm.running_mean")):
            buf.copy_(torch.rand(buf.shape, generator=g) * 0.2 - 0.1)
    return model, cfg


def detector_step(variant: str, depth: int, size, batch: int, device, config: str):
    """One Faster R-CNN SGD step on a synthetic batch (3 boxes per image) for an engine, from ``config``."""
    amp = variant.endswith("-amp")
    overrides = ["INPUT.MIN_SIZE_TRAIN", f"({min(size)},)", "INPUT.MAX_SIZE_TRAIN", str(max(size))]
    if variant == "tv-engine-amp":  # the torchvision engine's fast options: AMP and a channels_last backbone
        overrides += ["MODEL.RESNET_BACKBONES.CHANNELS_LAST", "True"]
    boxes = torch.tensor([[50.0, 60.0, 300.0, 400.0], [400.0, 100.0, 700.0, 500.0], [100.0, 500.0, 260.0, 700.0]])
    images = [torch.rand(3, *size) * 255 for _ in range(batch)]
    model, _ = build_detector(variant[:2], depth, device, config, overrides)
    model.train()
    if variant.startswith("d2"):
        from detectron2.structures import Boxes, Instances
        from detectron2.utils.events import EventStorage

        inputs = []
        for im in images:
            inst = Instances(tuple(size))
            inst.gt_boxes = Boxes(boxes.clone())
            inst.gt_classes = torch.tensor([1, 2, 3])
            inputs.append({"image": im.to(device), "instances": inst.to(device)})

        def forward():
            with EventStorage():  # detectron2's heads log into the current storage
                return model(inputs)
    else:
        targets = [{"boxes": boxes.to(device), "labels": torch.tensor([2, 3, 4], device=device)} for _ in images]

        def forward():
            return model(images, targets)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    first_loss = []

    def step():
        torch.manual_seed(0)  # the same sampling in every engine and dtype's first step
        with torch.autocast(device.type, dtype=half_dtype(device), enabled=amp):
            losses = forward()
        total = sum(losses.values())
        if not first_loss:
            first_loss.append(total.item())
        opt.zero_grad()
        scaler.scale(total).backward()
        scaler.step(opt)
        scaler.update()

    step.model = model  # for --profile's per-module scopes
    return step, sum(p.numel() for p in model.parameters()), first_loss


def detector_eval(variant: str, depth: int, size, batch: int, device, config: str):
    """What --eval-only does, on one batch of ``batch`` images (one call, as detectron2's batched
    inference and :class:`resnet_backbones.Predictor` make it): preprocessing, backbone, RPN, box head and
    postprocessing, with the config's inference keys (as both engines' evaluation applies them:
    :func:`resnet_backbones.inference.inference_runner`). The exported rows are exported for ``batch``
    images per graph."""
    from resnet_backbones.inference import inference_runner

    overrides = ["INPUT.MIN_SIZE_TEST", str(min(size)), "INPUT.MAX_SIZE_TEST", str(max(size))]
    if "-opt" in variant or variant in EXPORT_FORMATS:
        overrides += ["MODEL.RESNET_BACKBONES.OPTIMIZE_FOR_INFERENCE", "True"]
    if variant.endswith("-amp"):
        overrides += ["MODEL.RESNET_BACKBONES.INFERENCE_AMP", "True"]
    model, cfg = build_detector(variant[:2], depth, device, config, overrides)
    model.eval()
    images = [(torch.rand(3, *size) * 255).to(device) for _ in range(batch)]
    if variant in EXPORT_FORMATS:
        import atexit
        import shutil
        import tempfile

        from resnet_backbones.export import ExportedDetector, export_detector

        if device.type != "cpu":
            raise ValueError(f"{variant}: the exported detectors run on the CPU only")
        folder = tempfile.mkdtemp(prefix="rb_export_")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        # int8: calibrated on the benchmark's own random images, which is enough for its speed (not its AP).
        calibration = images if EXPORT_FORMATS[variant] == "onnx-int8" else None
        export_detector(cfg, model, folder, EXPORT_FORMATS[variant], batch_size=batch,
                        calibration_images=calibration, calibration_source="the benchmark's random images")
        runner = ExportedDetector(folder)
    else:
        runner = inference_runner(cfg, model, device)
    if variant.startswith("d2"):
        inputs = [{"image": im, "height": size[0], "width": size[1]} for im in images]
    else:
        inputs = images

    def step():
        with torch.no_grad():
            runner(inputs)

    step.model = model  # for --profile's per-module scopes
    return step, sum(p.numel() for p in model.parameters())


def describe(variant: str, mode: str, device, native_bf16: bool) -> tuple:
    """(builder, dtype, memory format, compiled) as the table shows them."""
    amp = variant.endswith("-amp")
    half = "fp16" if device.type == "cuda" else ("bf16" if native_bf16 else "bf16 (emulated)")
    full = "fp32 (TF32 convs)" if device.type == "cuda" else "fp32"
    dtype = f"{half} autocast" if amp else full
    if variant in EXPORT_FORMATS:
        runtime = "TorchScript" if EXPORT_FORMATS[variant] == "torchscript" else "ONNX in onnxruntime"
        fmt = "NHWC backbone" if EXPORT_FORMATS[variant] == "torchscript" else "onnxruntime's"
        if EXPORT_FORMATS[variant] == "onnx-int8":
            dtype = "int8 (QDQ; predictors, RoIAlign, NMS fp32)"
        return f"torchvision engine exported: {runtime} (OPTIMIZE_FOR_INFERENCE)", dtype, fmt, "no"
    if mode.startswith("detector"):
        engine = "detectron2 engine" if variant.startswith("d2") else "torchvision engine"
        if "-opt" in variant:
            engine += ", OPTIMIZE_FOR_INFERENCE"
        nhwc = variant == "tv-engine-amp" and mode == "detector" or "-opt" in variant
        return engine, dtype, "NHWC backbone" if nhwc else "NCHW", "no"
    fmt = "NHWC" if variant.startswith(("ours-opt", "ours-compiled")) else "NCHW"
    compiled = "yes" if variant.startswith("ours-compiled") else "no"
    return VARIANTS[variant][1], dtype, fmt, compiled
