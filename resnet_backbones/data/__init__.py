"""Datasets: COCO under detectron2's names, the embedded synthetic shapes, samplers."""
from .catalog import (DatasetError, DatasetSpec, config_datasets, get_dataset, register_coco_instances,
                      registered_datasets)
from .dataset import COCOInstances, InferenceSampler, TrainingBatchSampler, collate
from .synthetic import ensure_synthetic
from .validate import DatasetValidationError, UnreadableImageError, check_images, read_image, validate_coco
