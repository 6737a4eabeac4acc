"""Every config key is either read by the torchvision engine or refused/inert by name (tv/supported.py)."""
import torch
import torchvision

from resnet_backbones.config import CfgNode, load_config
from resnet_backbones.data import get_dataset, register_coco_instances
from resnet_backbones.data.synthetic import generate_split
from resnet_backbones.tv.main import main as tv_main
from resnet_backbones.tv.supported import FIXED, NOT_READ


class TrackingCfg(CfgNode):
    """A CfgNode that records the full name of every key read as an attribute (``cfg.MODEL.RPN.X``)."""

    def __getattr__(self, name):
        value = super().__getattr__(name)
        path = self.__dict__.get("_path", "")
        full = f"{path}.{name}" if path else name
        self.__dict__["_log"].add(full)
        if isinstance(value, TrackingCfg):
            value.__dict__["_path"] = full
            value.__dict__["_log"] = self.__dict__["_log"]
        return value


def _tracking(cfg, log):
    node = TrackingCfg(cfg)  # yacs builds nested nodes of the same class
    node.__dict__["_log"] = log
    node.__dict__["_path"] = ""

    def attach(n, prefix):
        for k, v in n.items():
            if isinstance(v, TrackingCfg):
                v.__dict__["_log"] = log
                v.__dict__["_path"] = f"{prefix}{k}"
                attach(v, f"{prefix}{k}.")
    attach(node, "")
    node.freeze()
    return node


def _leaves(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, CfgNode):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def test_every_key_is_read_or_refused(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for split, n in (("train", 16), ("val", 4)):
        json_file = generate_split(str(root), split, n, seed=11 if split == "train" else 12)
        register_coco_instances(f"supported_{split}", json_file, str(root / split))
    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    log = set()
    common = ["MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "('supported_train',)", "DATASETS.TEST", "('supported_val',)",
              "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
              "MODEL.RESNET_BACKBONES.LOG_PERIOD", "1"]
    variants = [
        ("quick_schedules/faster_rcnn_R18_synthetic.yaml", ["TEST.EVAL_PERIOD", "1"]),
        ("quick_schedules/mask_rcnn_R18_synthetic.yaml",
         ["SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm", "MODEL.WEIGHTS", str(weights), "SOLVER.WARMUP_METHOD", "constant",
          "TEST.EXPECTED_RESULTS", "[['bbox', 'AP', 0.0, 100.0]]", "SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLR"]),
        ("quick_schedules/faster_rcnn_R18_synthetic.yaml", ["SOLVER.LR_SCHEDULER_NAME", "WarmupStepWithFixedGammaLR"]),
        ("quick_schedules/mask_rcnn_R50_C4_synthetic.yaml", []),  # Res5ROIHeads and a body backbone
        ("faster_rcnn_VGG16.yaml", [  # the VGG body, at the synthetic data's size
            "MODEL.WEIGHTS", "", "MODEL.ROI_HEADS.NUM_CLASSES", "3", "INPUT.MIN_SIZE_TRAIN", "(128,)",
            "INPUT.MAX_SIZE_TRAIN", "240", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "240",
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64", "MODEL.RPN.POST_NMS_TOPK_TEST", "64",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32"]),
    ]
    for i, (name, extra) in enumerate(variants):
        cfg = load_config(name, common + extra + ["OUTPUT_DIR", str(tmp_path / f"out{i}")], use_detectron2=False)
        tv_main(_tracking(cfg, log), name, eval_only=False, resume=False)
    # The embedded dataset's location (the runs above use registered files instead).
    get_dataset("synthetic_shapes_val", _tracking(load_config(variants[0][0], use_detectron2=False), log))
    keys = set(_leaves(load_config(variants[0][0], use_detectron2=False)))
    unaccounted = sorted(k for k in keys if k not in log and k not in FIXED and k not in NOT_READ)
    assert not unaccounted, f"keys neither read nor refused by the torchvision engine: {unaccounted}"
    stale = sorted(k for k in NOT_READ if k in log)
    assert not stale, f"NOT_READ lists keys the engine does read: {stale}"
