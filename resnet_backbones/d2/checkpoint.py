"""A DetectionCheckpointer that loads every resnet_backbones weight source into a detectron2 model."""
import logging

from detectron2.checkpoint import DetectionCheckpointer

from ..config import check_cfg_conventions
from ..weights import load_file, match_body_state, parse_weights
from ..weights.catalog import fetch_source, known_conventions

__all__ = ["ResnetBackbonesCheckpointer"]

logger = logging.getLogger(__name__)

_DETECTOR_PREFIXES = ("proposal_generator.", "roi_heads.")


class ResnetBackbonesCheckpointer(DetectionCheckpointer):
    """Reads MODEL.WEIGHTS of any supported format safely and checks it against ``cfg``.

    - A detectron2 training checkpoint (heads included) loads as with DetectionCheckpointer, but
      through ``torch.load(weights_only=True)`` / the restricted unpickler.
    - A backbone source (torchvision, timm, MSRA/FAIR caffe2 ``.pkl``, detectron2 or converted ``.pth``,
      ``torchvision://`` / ``detectron2://`` / ``timm://`` names) is renamed into the model's backbone
      (``backbone.bottom_up.*`` for FPN models, ``backbone.*`` for a bare body), after the same
      conventions checks as the torchvision engine: a mismatch with INPUT.FORMAT, MODEL.PIXEL_MEAN/STD
      or MODEL.RESNETS.STRIDE_IN_1X1 is an error naming the keys to set, and every body key must fit.
    """

    def __init__(self, model, save_dir: str = "", *, cfg, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.cfg = cfg

    def load(self, path, *args, **kwargs):
        self._source = path
        # Conventions of a named source are known before downloading it: fail before the download.
        check_cfg_conventions(self.cfg, known_conventions(path or ""))
        if path and path.startswith(("torchvision://", "timm://")):
            # Not files: resolved by our catalog (detectron2's PathManager knows only detectron2://).
            checkpoint = self._load_file(path)
            incompatible = self._load_model(checkpoint)
            if incompatible is not None:
                self._log_incompatible_keys(incompatible)
            return {}
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename):
        source = getattr(self, "_source", None) or filename
        if source.startswith(("torchvision://", "timm://")):
            obj, hint = fetch_source(source)
        else:
            obj, hint = load_file(filename), "auto"
        state = obj.get("model", obj) if isinstance(obj, dict) else obj
        if isinstance(state, dict) and any(k.startswith(_DETECTOR_PREFIXES) for k in state):
            extra = {k: v for k, v in obj.items() if k != "model"} if "model" in obj else {}
            return {**extra, "model": dict(state), "__author__": "detectron2", "matching_heuristics": False}
        fmt = self.cfg.MODEL.RESNET_BACKBONES.WEIGHTS_FORMAT
        weights = parse_weights(obj, format=hint if fmt == "auto" else fmt, source=source)
        check_cfg_conventions(self.cfg, weights.conventions)
        backbone = self.model.backbone
        body, prefix = (backbone.bottom_up, "backbone.bottom_up.") if hasattr(backbone, "bottom_up") \
            else (backbone, "backbone.")
        tensors, dropped = match_body_state(body, weights)
        model = {prefix + k: v for k, v in tensors.items()}
        if hasattr(backbone, "bottom_up"):  # FPN tensors of a detectron2 checkpoint, if it has them
            fpn_keys = {"backbone." + k for k in backbone.state_dict() if not k.startswith("bottom_up.")}
            model.update({k: v for k, v in weights.extra.items() if k in fpn_keys})
        logger.info("%s: %d backbone tensors (%s format); dropped on purpose: %d", source, len(model),
                    weights.format, len(dropped))
        return {"model": model, "__author__": "resnet_backbones", "matching_heuristics": False}
