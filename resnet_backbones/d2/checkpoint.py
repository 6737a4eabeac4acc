"""A DetectionCheckpointer that loads MODEL.WEIGHTS through the same pipeline as the torchvision engine."""
import logging

from detectron2.checkpoint import DetectionCheckpointer

from ..weights.catalog import fetch_source
from ..weights.conventions import known_conventions
from ..weights.resolve import check_cfg_conventions, resolve_model_weights

__all__ = ["ResnetBackbonesCheckpointer"]

logger = logging.getLogger(__name__)


class ResnetBackbonesCheckpointer(DetectionCheckpointer):
    """Reads MODEL.WEIGHTS of any supported source safely and checks it against ``cfg``
    (:func:`resnet_backbones.weights.resolve.resolve_model_weights`, shared with the torchvision engine):

    - a detector checkpoint of detectron2's layout (a training checkpoint, or a model-zoo ``.pkl`` of
      numpy arrays, read by the restricted unpickler) or of the torchvision engine's (converted: class
      order, box deltas and mask channels), every tensor accounted for and the class count checked;
    - a backbone source (torchvision, timm, MSRA/FAIR caffe2 ``.pkl``, detectron2 or converted ``.pth``,
      ``torchvision://`` / ``detectron2://`` / ``timm://`` names) renamed into ``backbone.bottom_up.*``
      (FPN models) or ``backbone.*``, after the conventions checks (INPUT.FORMAT, MODEL.PIXEL_MEAN/STD,
      MODEL.RESNETS.STRIDE_IN_1X1 must match the weights: an error names the keys to set).
    """

    def __init__(self, model, save_dir: str = "", *, cfg, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.cfg = cfg

    def load(self, path, *args, **kwargs):
        self._source = path
        check_cfg_conventions(self.cfg, known_conventions(path or ""))
        if path and path.startswith(("torchvision://", "timm://")):
            # Not files: resolved by our catalog (detectron2's PathManager knows only detectron2://).
            incompatible = self._load_model(self._load_file(path))
            if incompatible is not None:
                self._log_incompatible_keys(incompatible)
            return {}
        if path and path.startswith(("detectron2://", "https://", "http://")):
            # Downloaded by our catalog, as on the torchvision engine: once, into $RESNET_BACKBONES_CACHE, and
            # without network access one error naming where to put the file (detectron2's PathManager would
            # use its own cache and end in a traceback).
            path = fetch_source(path).path
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename):
        # detectron2 has already resolved detectron2:// names to a local file; named sources of our
        # catalog (torchvision://, timm://) come here unresolved.
        source = getattr(self, "_source", None) or filename
        name = source if source.startswith(("torchvision://", "timm://")) else filename
        resolved = resolve_model_weights(self.model, self.cfg, layout="detectron2", source=name)
        logger.info(resolved.summary)
        return {**resolved.extra, "model": resolved.state, "__author__": "resnet_backbones",
                "matching_heuristics": False}
