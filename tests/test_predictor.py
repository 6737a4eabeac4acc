"""resnet_backbones.Predictor: the same detections as the model evaluation runs, from paths, arrays and
tensors, one image or batches, with the class names of the training set."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_backbones import Predictor
from resnet_backbones.config import ConfigError, load_config
from resnet_backbones.tv.model import build_model
from resnet_backbones.weights.convert import save_detector

QUICK = "quick_schedules/mask_rcnn_R18_synthetic.yaml"
# Every proposal kept, so a randomly initialised model gives detections and masks.
OPTS = ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
        "TEST.DETECTIONS_PER_IMAGE", "20"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    os.environ.setdefault("RESNET_BACKBONES_DATA", str(tmp_path_factory.mktemp("rbdata")))
    folder = tmp_path_factory.mktemp("predictor")
    torch.manual_seed(0)
    model = build_model(load_config(QUICK, OPTS, use_detectron2=False))
    path = str(folder / "model.pth")
    save_detector(model.state_dict(), path, layout="torchvision")
    images = []
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate([(70, 90), (70, 90), (50, 120)]):
        images.append(str(folder / f"{k}.png"))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images[-1])
    return path, images


def _eager(cfg, rgb: np.ndarray):
    """What evaluation runs on one image: the engine's model on the RGB tensor."""
    model = build_model(cfg).eval()
    model.load_state_dict(torch.load(cfg.MODEL.WEIGHTS, weights_only=True)["model"])
    with torch.no_grad():
        return model([torch.from_numpy(rgb).permute(2, 0, 1).contiguous()])[0]


def test_paths_arrays_and_tensors_give_the_models_own_detections(checkpoint):
    path, images = checkpoint
    predictor = Predictor.from_config(QUICK, path, OPTS)
    rgb = np.array(Image.open(images[0]))
    ref = _eager(predictor.cfg, rgb)
    assert len(ref["scores"]) > 0
    for item, fmt in [(images[0], "RGB"), (rgb, "RGB"), (rgb[:, :, ::-1], "BGR"),
                      (torch.from_numpy(rgb).permute(2, 0, 1), "RGB")]:
        d = predictor(item, array_format=fmt)
        assert torch.equal(d.boxes, ref["boxes"]) and torch.equal(d.scores, ref["scores"])
        assert torch.equal(d.classes, ref["labels"] - 1)
        assert torch.equal(d.masks, ref["masks"][:, 0])
        assert d.masks.shape[1:] == (70, 90) and d.image_size == (70, 90)
        assert d.class_names == [predictor.class_names[int(c)] for c in d.classes]
    assert predictor.class_names == ["circle", "square", "triangle"]  # the training json's, by category id


def test_batches_equal_single_images_of_one_size_and_keep_each_images_frame(checkpoint):
    path, images = checkpoint
    one = Predictor.from_config(QUICK, path, OPTS)
    two = Predictor.from_config(QUICK, path, OPTS, batch_size=2)
    singles, batched = one(images), two(images)
    assert len(batched) == 3
    for a, b in zip(singles[:2], batched[:2]):  # the same size: the batch adds no padding
        assert torch.allclose(a.boxes, b.boxes, atol=1e-3) and torch.allclose(a.scores, b.scores, atol=1e-5)
    last = batched[2]  # padded to 70 x 128 in its batch, reported in its own 50 x 120 frame
    assert last.image_size == (50, 120) and last.masks.shape[1:] == (50, 120)
    assert (last.boxes[:, 2] <= 120).all() and (last.boxes[:, 3] <= 50).all()
    assert len(one(images[:1])) == 1 and isinstance(one(images[0]).above(0.5).scores, torch.Tensor)


def test_bad_inputs_are_refused_with_the_fix(checkpoint):
    path, images = checkpoint
    predictor = Predictor.from_config(QUICK, path, OPTS)
    with pytest.raises(TypeError, match="a path, an array or a tensor"):
        predictor(3.5)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        predictor(np.zeros((4, 4), np.uint8))
    with pytest.raises(ConfigError, match="one name per class"):
        Predictor(predictor.cfg, class_names=["a"])
    with pytest.raises(ConfigError, match="not a trained detector checkpoint"):
        Predictor.from_config(QUICK, "", OPTS)
