"""Datasets: COCO under detectron2's names, the embedded synthetic shapes, samplers; and the embedded
classification set for pretraining (an ImageFolder, not a detection dataset: not in the catalog)."""
from ..errors import DatasetError, DatasetValidationError, UnreadableImageError
from .catalog import (DatasetSpec, check_dataset, check_dataset_files, config_datasets, get_dataset,
                      register_coco_instances, registered_datasets, resolve_dataset)
from .dataset import COCOInstances, InferenceSampler, TrainingBatchSampler, collate
from .images import read_image
from .synthetic import ensure_synthetic
from .synthetic_classes import ensure_classification_set
from .validate import check_images, validate_coco
