"""What a user is told when a run is set up not to learn or learned nothing: the evaluation that found
nothing, a randomly initialised FrozenBN body, and a C4 detector trained from scratch."""
import math
from typing import Mapping, Optional

__all__ = ["c4_from_scratch_warning", "evaluation_hint", "random_frozen_bn_warning"]

# bbox AP (percent) below which an evaluation "found nothing": untrained or 2-iteration models score
# 0.01-0.06 on the synthetic shapes (both engines), one that learned anything scores whole points.
NEAR_ZERO_AP = 0.1


def evaluation_hint(cfg, bbox: Optional[Mapping[str, float]], num_detections: Optional[int] = None) -> Optional[str]:
    """One line of likely causes when an evaluation found nothing, else None.

    Nothing: no detection (``num_detections`` 0, or detectron2's COCOEvaluator giving no or NaN bbox
    AP), or bbox AP (percent) under :data:`NEAR_ZERO_AP`.
    """
    ap = (bbox or {}).get("AP", float("nan"))
    if num_detections != 0 and math.isfinite(ap) and ap >= NEAR_ZERO_AP:
        return None
    found = "no detections" if num_detections == 0 or not math.isfinite(ap) else f"bbox AP {ap:.3f}, about 0"
    return (f"Evaluation found {found}. Likely causes: training diverged (see the 'Training health' line; lower "
            f"SOLVER.BASE_LR={cfg.SOLVER.BASE_LR} or lengthen SOLVER.WARMUP_ITERS={cfg.SOLVER.WARMUP_ITERS}); "
            f"too few iterations (SOLVER.MAX_ITER={cfg.SOLVER.MAX_ITER}); MODEL.ROI_HEADS.NUM_CLASSES="
            f"{cfg.MODEL.ROI_HEADS.NUM_CLASSES} or the category ids not matching the dataset"
            + (f"; MODEL.ROI_HEADS.SCORE_THRESH_TEST={cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST} too high."
               if cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST > 0 else "."))


def random_frozen_bn_warning(norm: str, loads_weights: bool, *, norm_key: str, weights_key: str,
                             fix: str) -> Optional[str]:
    """The warning for training a FrozenBN body that no weights will initialise, else None.

    A randomly initialised FrozenBN is a fixed identity (scale 1, shift 0, mean 0, variance 1), so
    nothing normalises the activations: they grow with depth and the loss typically diverges within a
    few iterations (an R-18 at LR 0.001 reached NaN by its fourth iteration). Only a warning, as
    detectron2 allows it. ``fix`` names the config's way to train the norms instead.
    """
    if norm != "FrozenBN" or loads_weights:
        return None
    return (f"training a randomly initialised body with {norm_key}=FrozenBN and no weights ({weights_key} is "
            "empty): a random FrozenBN is a fixed identity, so activations grow with depth and the loss "
            f"usually diverges within a few iterations. Load ImageNet weights into {weights_key}, or train "
            f"the norms from scratch: {fix}.")


def c4_from_scratch_warning(roi_heads: str, loads_weights: bool) -> Optional[str]:
    """The warning for training the C4 detector (``Res5ROIHeads``) with no weights, else None.

    Its per-RoI head is res5 followed by a global average, as the ImageNet classifier it comes from (He et
    al. 2016, section 4.3 and appendix A); from random weights it learns to tell the classes apart far more
    slowly than the FPN or DC5 heads: the C4 quick schedule reached bbox AP50 13.2 from scratch against 54.5
    from the body pretrained on the embedded classification set (configs/pretrain/README.md).
    """
    if roi_heads != "Res5ROIHeads" or loads_weights:
        return None
    return ("training the C4 detector (MODEL.ROI_HEADS.NAME=Res5ROIHeads) from random weights (MODEL.WEIGHTS is "
            "empty): its res5 head, averaged over each RoI, is meant to start pretrained, as in the paper, and "
            "from scratch it learns the classes slowly (the C4 quick schedule: bbox AP50 13 against 54). Set "
            "MODEL.WEIGHTS to ImageNet weights, or pretrain the body first: python tools/pretrain_net.py --config "
            "pretrain/R-50_C4_synthetic.yaml, then MODEL.WEIGHTS output/pretrain/R-50_C4_synthetic/"
            "model_final_backbone.pth.")
