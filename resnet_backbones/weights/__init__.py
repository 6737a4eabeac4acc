"""ImageNet / detectron2 weights into the stages, from every common format (see formats.py)."""
from ..errors import WeightsError
from .catalog import cache_dir, fetch_source
from .conventions import (FAIR_RESNEXT_CONVENTIONS, MSRA_CONVENTIONS, TORCHVISION_CONVENTIONS, Conventions,
                          check_stride_convention)
from .convert import save_converted
from .formats import FORMAT_TABLE, FORMATS, RestrictedUnpickler, Weights, load_file, load_pickle, parse_weights
from .loader import LoadReport, load_backbone_weights, match_body_state, match_res5_head_state, read_weights
from .pretrained import BACKBONE_FILE_FORMAT, body_architecture, check_architecture, save_backbone_file
