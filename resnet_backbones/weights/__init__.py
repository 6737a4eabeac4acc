"""ImageNet / detectron2 weights into the stages, from every common format (see formats.py)."""
from .catalog import cache_dir, fetch_source, is_named_source
from .formats import (
    FAIR_RESNEXT_CONVENTIONS,
    FORMATS,
    MSRA_CONVENTIONS,
    TORCHVISION_CONVENTIONS,
    Conventions,
    RestrictedUnpickler,
    Weights,
    WeightsError,
    load_file,
    load_pickle,
    parse_weights,
)
from .loader import (LoadReport, check_stride_convention, load_backbone_weights, match_body_state,
                     match_res5_head_state, read_weights)
from .convert import save_converted
