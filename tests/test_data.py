import json
import os

import numpy as np
import pytest
import torch

from resnet_backbones.data import (
    COCOInstances,
    DatasetError,
    DatasetSpec,
    TrainingBatchSampler,
    get_dataset,
    register_coco_instances,
)
from resnet_backbones.data.synthetic import CATEGORIES, generate_split


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    json_file = generate_split(str(root), "train", 12, seed=7)
    return DatasetSpec("tiny", json_file, str(root / "train"))


def test_synthetic_is_deterministic(tiny, tmp_path):
    again = generate_split(str(tmp_path), "train", 12, seed=7)
    assert json.load(open(again)) == json.load(open(tiny.json_file))
    for name in os.listdir(tiny.image_root):
        assert open(os.path.join(tiny.image_root, name), "rb").read() == \
            open(os.path.join(str(tmp_path), "train", name), "rb").read()


def test_synthetic_annotations_are_consistent(tiny):
    data = json.load(open(tiny.json_file))
    assert data["categories"] == CATEGORIES and len(data["images"]) == 12
    ds = COCOInstances(tiny, with_masks=True)
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.dtype == torch.uint8 and image.shape[0] == 3  # as detectron2's mapper gives it
        for box, mask in zip(target["boxes"], target["masks"]):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
        assert set(target["labels"].tolist()) <= {1, 2, 3}


def test_flip_moves_boxes_with_masks(tiny):
    ds = COCOInstances(tiny, with_masks=True, input_format="BGR")
    (img, t), (img_f, t_f) = ds[(0, False)], ds[(0, True)]
    assert torch.equal(img_f, img.flip(-1))
    assert torch.equal(t_f["masks"], t["masks"].flip(-1))
    for box, mask in zip(t_f["boxes"], t_f["masks"]):
        xs = torch.nonzero(mask, as_tuple=True)[1]
        assert box[0].item() == xs.min().item() and box[2].item() == xs.max().item() + 1
    rgb = COCOInstances(tiny)[0][0]
    assert torch.equal(rgb, img.flip(0))


def test_exif_orientation_is_applied_and_polygons_are_read(tmp_path):
    """detectron2's read_image applies the EXIF orientation; polygons stay polygons with MASK_FORMAT polygon."""
    from PIL import Image

    from resnet_backbones.data.catalog import DatasetSpec

    arr = np.zeros((20, 30, 3), np.uint8)
    arr[:5, :] = 255  # a white band along the top of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: 30 x 20 (h x w), band on the right
    Image.fromarray(arr).save(tmp_path / "a.jpg", exif=exif, quality=100)
    poly = [2.0, 2.0, 15.0, 2.0, 15.0, 25.0]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "height": 30, "width": 20}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 2, 13, 23], "area": 150,
                             "iscrowd": 0, "segmentation": [poly]},
                            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [0, 0, 5, 5], "area": 25,
                             "iscrowd": 1, "segmentation": {"counts": [0, 25, 575], "size": [30, 20]}}],
            "categories": [{"id": 7, "name": "x"}]}
    (tmp_path / "a.json").write_text(json.dumps(data))
    spec = DatasetSpec("exif", str(tmp_path / "a.json"), str(tmp_path))
    image, target = COCOInstances(spec, with_masks=True, mask_format="polygon")[0]
    assert tuple(image.shape) == (3, 30, 20)
    assert image[:, :, -3:].float().mean() > 200 and image[:, :, :3].float().mean() < 50
    assert len(target["polygons"]) == 1 and target["polygons"][0][0].tolist() == poly  # the crowd one is skipped
    _, flipped = COCOInstances(spec, with_masks=True, mask_format="polygon")[(0, True)]
    assert flipped["polygons"][0][0].tolist() == [18.0, 2.0, 5.0, 2.0, 5.0, 25.0]


def test_rle_with_polygon_mask_format_is_refused(tiny):
    with pytest.raises(DatasetError, match="INPUT.MASK_FORMAT bitmask"):
        COCOInstances(tiny, with_masks=True, mask_format="polygon")[0]


def test_sampler_is_deterministic_grouped_and_resumable():
    wide = [i % 3 == 0 for i in range(50)]
    make = lambda start=0: iter(TrainingBatchSampler(wide, 4, seed=3, start_iter=start))  # noqa: E731
    a = make()
    batches = [next(a) for _ in range(30)]
    assert all(len({wide[i] for i, _ in b}) == 1 for b in batches), "aspect groups are not mixed"
    b = make(start=17)
    assert [next(b) for _ in range(13)] == batches[17:]
    ranks = [iter(TrainingBatchSampler(wide, 2, seed=3, rank=r, world_size=2, group_by_aspect=False)) for r in (0, 1)]
    first = [i for r in ranks for i, _ in next(r)]
    assert len(set(first)) == 4


def test_missing_coco_names_the_path_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    with pytest.raises(DatasetError, match=r"instances_val2017.json does not exist.*DETECTRON2_DATASETS"):
        get_dataset("coco_2017_val")
    with pytest.raises(DatasetError, match="not registered.*register_coco_instances"):
        get_dataset("coco_2099_val")


def test_register_and_corrupt_image(tiny, tmp_path):
    image_root = tmp_path / "images"
    image_root.mkdir()
    for name in os.listdir(tiny.image_root):
        (image_root / name).write_bytes(open(os.path.join(tiny.image_root, name), "rb").read())
    (image_root / "000000.png").write_bytes(b"\x89PNG broken")
    register_coco_instances("my_shapes", tiny.json_file, str(image_root))
    ds = COCOInstances(get_dataset("my_shapes"))
    ds[1]  # intact
    with pytest.raises(DatasetError, match=r"000000.png.*corrupt"):
        ds[0]
    os.remove(image_root / "000001.png")
    with pytest.raises(DatasetError, match="000001.png.*does not exist"):
        ds[1]
