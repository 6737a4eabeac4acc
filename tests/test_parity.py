"""detectron2 behaviours of the torchvision engine that the equivalence test's config does not exercise
(no detectron2 needed: the expected values follow detectron2's source, cited per test)."""
import json

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_util

from resnet_backbones.config import load_config
from resnet_backbones.data import COCOInstances
from resnet_backbones.data.catalog import DatasetSpec
from resnet_backbones.tv.model import build_model
from resnet_backbones.tv.parity import Detectron2AnchorGenerator

POLY = [10.0, 10.0, 50.0, 12.0, 30.0, 40.0]


def _dataset(tmp_path, anns, w=64, h=48):
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(tmp_path / "a.png")
    base = {"iscrowd": 0, "area": 100.0, "category_id": 1, "image_id": 1}
    data = {"images": [{"id": 1, "file_name": "a.png", "height": h, "width": w}],
            "annotations": [{**base, "id": i + 1, **a} for i, a in enumerate(anns)],
            "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "a.json").write_text(json.dumps(data))
    return DatasetSpec("parity", str(tmp_path / "a.json"), str(tmp_path))


def test_polygon_annotations_with_bitmask_format_are_rasterised_after_the_resize(tmp_path):
    """annotations_to_instances draws polygons at the resized size (polygons_to_bitmask), not an upscaled mask."""
    spec = _dataset(tmp_path, [{"bbox": [10, 10, 40, 30], "segmentation": [POLY]}])
    image, target = COCOInstances(spec, with_masks=True, mask_format="bitmask")[0]
    cfg = load_config("quick_schedules/mask_rcnn_R18_synthetic.yaml", ["INPUT.MIN_SIZE_TRAIN", "(144,)"],
                      use_detectron2=False)
    transform = build_model(cfg).transform.train()
    resized, t = transform.resize(image, target)
    h, w = resized.shape[-2:]
    scale = np.tile([w / 64, h / 48], 3)
    expected = mask_util.decode(mask_util.merge(mask_util.frPyObjects([np.array(POLY) * scale], h, w)))
    assert torch.equal(t["masks"][0], torch.from_numpy(expected))


def test_invalid_polygons_are_dropped_as_load_coco_json_does(tmp_path):
    spec = _dataset(tmp_path, [
        {"bbox": [10, 10, 40, 30], "segmentation": [POLY, [1.0, 2.0, 3.0, 4.0]]},  # the short polygon is dropped
        {"bbox": [1, 1, 5, 5], "segmentation": [[1.0, 2.0, 3.0, 4.0]]},  # no valid polygon: instance dropped
    ])
    _, target = COCOInstances(spec, with_masks=True, mask_format="polygon")[0]
    assert len(target["polygons"]) == 1 and len(target["polygons"][0]) == 1
    _, target = COCOInstances(spec, with_masks=True, mask_format="bitmask")[0]
    assert len(target["masks"]) == 1


def test_square_images_group_with_tall_ones(tmp_path):
    """AspectRatioGroupedDataset: bucket 0 only for w > h."""
    assert COCOInstances(_dataset(tmp_path, [], w=48, h=48)).aspect_ratio_is_wide() == [False]


def test_detections_per_image_minus_one_keeps_all():
    cfg = load_config("quick_schedules/faster_rcnn_R18_synthetic.yaml",
                      ["TEST.DETECTIONS_PER_IMAGE", "-1", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"],
                      use_detectron2=False)
    heads = build_model(cfg).roi_heads
    proposals = [torch.tensor([[0.0, 0.0, 50.0, 50.0], [10.0, 60.0, 40.0, 90.0]])]
    logits = torch.zeros(2, 4)
    boxes, scores, labels = heads.postprocess_detections(logits, torch.zeros(2, 16), proposals, [(100, 100)])
    assert len(boxes[0]) == 6  # 2 proposals x 3 classes, none suppressed (different classes / no overlap)


def test_anchor_offset_and_several_sizes_per_level():
    """generate_cell_anchors is size-major; OFFSET shifts the grid by offset * stride."""
    gen = Detectron2AnchorGenerator([[16, 32]], [[0.5, 1.0]], strides=[8], offset=0.5)
    cell = gen.cell_anchors([16, 32], [0.5, 1.0])
    assert torch.allclose(cell[1], torch.tensor([-8.0, -8.0, 8.0, 8.0]))  # size 16, ratio 1
    assert torch.allclose(cell[3], torch.tensor([-16.0, -16.0, 16.0, 16.0]))  # size 32, ratio 1
    anchors = gen.grid_anchors([torch.zeros(1, 1, 2, 3)])[0]
    assert anchors.shape == (2 * 3 * 4, 4)
    assert torch.allclose(anchors[4 + 1], torch.tensor([12.0 - 8, 4.0 - 8, 12.0 + 8, 4.0 + 8]))  # x=1, y=0


def test_resize_is_detectron2s_pil_bilinear_and_commutes_with_the_flip():
    """detectron2's ResizeTransform.apply_image on uint8: ``Image.fromarray(img).resize((w, h),
    Image.BILINEAR)`` (ResizeShortestEdge's default interp), a grey image as mode "L". The engine flips
    before resizing where detectron2 flips after: PIL's filter is symmetric, so both give the same pixels."""
    from resnet_backbones.tv.parity import resize_like_detectron2

    rng = np.random.default_rng(0)
    for h, w, nh, nw in [(97, 131, 128, 173), (480, 640, 800, 1067), (2000, 1500, 1333, 1000), (123, 157, 64, 82)]:
        hwc = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = torch.from_numpy(hwc).permute(2, 0, 1)
        expected = np.asarray(Image.fromarray(hwc).resize((nw, nh), Image.BILINEAR))
        out = resize_like_detectron2(image, (nh, nw))
        assert out.dtype == torch.uint8 and np.array_equal(out.permute(1, 2, 0).numpy(), expected), (h, w)
        assert torch.equal(resize_like_detectron2(image.flip(-1), (nh, nw)), out.flip(-1)), (h, w)
        assert torch.equal(resize_like_detectron2(image.float(), (nh, nw)), out)  # 0-255 floats: the same
    grey = rng.integers(0, 256, (1, 50, 70), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(grey[0], mode="L").resize((35, 25), Image.BILINEAR))
    assert np.array_equal(resize_like_detectron2(torch.from_numpy(grey), (25, 35))[0].numpy(), expected)
