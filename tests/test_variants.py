"""The dataset variants (resnet_backbones.data.variants): each varies what it says, and both readers load it."""
import dataclasses
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from resnet_backbones.data import COCOInstances, DatasetSpec, get_dataset, registered_datasets
from resnet_backbones.data.variants import COCO_CATEGORY_IDS, VARIANTS, generate_variant


def small(name: str, tmp_path, n: int = 40):
    v = dataclasses.replace(VARIANTS[name], num_train=n, num_val=4)
    root = generate_variant(str(tmp_path / name), v)
    with open(os.path.join(root, "annotations", "instances_train.json")) as f:
        return v, root, json.load(f)


def test_every_variant_is_a_registered_dataset():
    for name in VARIANTS:
        assert {f"shapes_{name}_train", f"shapes_{name}_val"} <= set(registered_datasets())
    assert len(VARIANTS) >= 5


def test_coco80_variant_uses_cocos_real_ids(tmp_path):
    v, root, d = small("coco80_jpeg_polygon", tmp_path)
    assert [c["id"] for c in d["categories"]] == COCO_CATEGORY_IDS and len(COCO_CATEGORY_IDS) == 80
    used = {a["category_id"] for a in d["annotations"]}
    assert used <= set(COCO_CATEGORY_IDS) and max(used) > 80  # non-contiguous ids really used
    assert all(f["file_name"].endswith(".jpg") for f in d["images"])
    assert any(Image.open(os.path.join(root, "train", f["file_name"])).mode == "L" for f in d["images"])
    annotated = {a["image_id"] for a in d["annotations"] if not a["iscrowd"]}
    assert len(annotated) < len(d["images"])  # some images without any object
    crowd = [a for a in d["annotations"] if a["iscrowd"]]
    assert crowd and all(isinstance(a["segmentation"]["counts"], list) for a in crowd)  # uncompressed RLE
    for a in crowd:
        h, w = a["segmentation"]["size"]
        rle = mask_util.frPyObjects(a["segmentation"], h, w)
        assert mask_util.area(rle) == a["area"]
    polys = [a for a in d["annotations"] if not a["iscrowd"]]
    assert polys and all(isinstance(a["segmentation"], list) for a in polys)


def test_polygon_variants_have_no_overlap_and_rle_variants_decode(tmp_path):
    _, _, d = small("small_polygon_3cls", tmp_path)
    by_image = {}
    for a in d["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    sizes = {f["id"]: (f["height"], f["width"]) for f in d["images"]}
    for image_id, anns in by_image.items():
        h, w = sizes[image_id]
        union = np.zeros((h, w), int)
        for a in anns:
            union += mask_util.decode(mask_util.merge(mask_util.frPyObjects(a["segmentation"], h, w)))
        assert union.max() <= 1
        assert 96 <= h <= 160 and 96 <= w <= 160
    _, _, d = small("rle_png_3cls", tmp_path)
    assert {a["category_id"] for a in d["annotations"]} <= {1, 2, 3}
    assert all(isinstance(a["segmentation"]["counts"], str) for a in d["annotations"] if not a["iscrowd"])


def test_mixed_variant_mixes_jpeg_and_png(tmp_path):
    _, _, d = small("large_mixed_coco80", tmp_path)
    assert {os.path.splitext(f["file_name"])[1] for f in d["images"]} == {".jpg", ".png"}
    assert all(200 <= f["width"] <= 320 for f in d["images"])


@pytest.mark.parametrize("mask_format", ["bitmask", "polygon"])
def test_our_reader_loads_a_variant(tmp_path, mask_format):
    _, root, _ = small("coco80_jpeg_polygon", tmp_path, n=12)
    spec = DatasetSpec("v", os.path.join(root, "annotations", "instances_train.json"), os.path.join(root, "train"))
    data = COCOInstances(spec, with_masks=True, mask_format=mask_format)
    assert len(data.class_names) == 80
    for i in range(len(data)):
        image, target = data[i]
        assert image.shape[0] == 3  # grey JPEGs come out as 3 channels


def test_variant_is_generated_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_BACKBONES_DATA", str(tmp_path))
    monkeypatch.setitem(VARIANTS, "rle_png_3cls", dataclasses.replace(VARIANTS["rle_png_3cls"], num_train=6, num_val=2))
    spec = get_dataset("shapes_rle_png_3cls_val")
    assert spec.json_file.startswith(str(tmp_path)) and os.path.isfile(spec.json_file)
