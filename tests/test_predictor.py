"""resnet_backbones.Predictor: the same detections as the model evaluation runs, from paths, arrays and
tensors, one image or batches, on RGB and BGR models, with the class names of the training set in
category-id order; tools/demo.py prints them; Detections.above keeps each detection whole."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_backbones import Predictor
from resnet_backbones.config import ConfigError, load_config
from resnet_backbones.predictor import Detections
from resnet_backbones.tv.model import build_model
from resnet_backbones.weights.convert import save_detector

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from detections import as_detections, assert_same_detections, coco_results_by_image  # noqa: E402
from own_data import dataset_args, write_coco_folder  # noqa: E402

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
        # By content: a batch runs other matmul blockings, so two near-equal scores may swap.
        assert_same_detections(a, b, box_atol=1e-3, score_atol=1e-5, mask_mismatch=1e-3, limit=20, min_count=1)
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


# -- a BGR model (every R-50/R-101 COCO config: detectron2's MSRA weights take BGR), served and evaluated ----------
# The quick schedule's model in BGR: ImageNet's mean in BGR order, as those configs set it, and the quick
# schedule's std in BGR order (the MSRA weights' configs divide by 1).
BGR = ["INPUT.FORMAT", "BGR", "MODEL.PIXEL_MEAN", "[103.53, 116.28, 123.675]",
       "MODEL.PIXEL_STD", "[57.375, 57.12, 58.395]"]
OWN = ["DATASETS.TRAIN", '("my_train",)', "DATASETS.TEST", '("my_val",)']
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _spread_the_scores(model, images) -> None:
    """A random classifier calibrated on the model's own box features of ``images``: logits that are a
    random projection of each box's centred feature, so that the scores spread over (0, 1) and several
    classes win (a freshly initialised one scores every box of every class within 0.02 of 1/3, and
    one class wins everywhere: a 2-decimal printout of it could not tell two inputs apart)."""
    features = []
    hook = model.roi_heads.box_head.register_forward_hook(lambda module, args, out: features.append(out))
    with torch.no_grad():
        model.eval()(images)
    hook.remove()
    x = torch.cat(features)
    cls = model.roi_heads.box_predictor.cls_score
    weight = torch.randn(cls.weight.shape, generator=torch.Generator().manual_seed(1)) / x.std(0).norm()
    with torch.no_grad():
        cls.weight.copy_(weight)
        cls.bias.copy_(-weight @ x.mean(0))


@pytest.fixture(scope="module")
def bgr_run(tmp_path_factory):
    """A random Mask R-CNN in BGR, a COCO folder of one's own (coloured images; categories listed out of
    id order, tests/own_data.py) and what ``tools/train_net.py --eval-only`` found on its val images."""
    from resnet_backbones.data import read_image

    os.environ.setdefault("RESNET_BACKBONES_DATA", str(tmp_path_factory.mktemp("rbdata")))
    base = tmp_path_factory.mktemp("bgr")
    folder = write_coco_folder(str(base / "data"), num_train=2, num_val=2)
    datasets = [("my_train", os.path.join(folder, "train.json"), os.path.join(folder, "train")),
                ("my_val", os.path.join(folder, "val.json"), os.path.join(folder, "val"))]
    opts = BGR + OPTS + OWN
    cfg = load_config(QUICK, opts, use_detectron2=False, datasets=datasets)
    with open(os.path.join(folder, "val.json")) as f:
        val = json.load(f)
    paths = {im["id"]: os.path.join(folder, "val", im["file_name"]) for im in val["images"]}
    torch.manual_seed(0)
    model = build_model(cfg)
    # The model's input: the image in BGR order (the order this test's subject must keep).
    _spread_the_scores(model, [torch.from_numpy(read_image(p)).permute(2, 0, 1).flip(0).contiguous()
                               for p in paths.values()])
    weights = str(base / "model.pth")
    save_detector(model.state_dict(), weights, layout="torchvision")
    out = base / "eval"
    r = subprocess.run([sys.executable, "tools/train_net.py", "--config", QUICK, "--engine", "torchvision",
                        "--eval-only", *dataset_args(folder), *opts, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out / "inference" / "my_val" / "coco_instances_results.json") as f:
        results = coco_results_by_image(json.load(f))
    return SimpleNamespace(folder=folder, datasets=datasets, opts=opts, weights=weights, paths=paths,
                           results=results, categories=val["categories"])


def _by_class_index(results, categories):
    """COCO results with ``category_id`` replaced by the model's class index: the rank of the id among the
    json's sorted ids (detectron2's load_coco_json numbering, which both engines follow)."""
    ids = sorted(c["id"] for c in categories)
    return [{**r, "category_id": ids.index(r["category_id"])} for r in results]


def test_a_bgr_model_serves_the_detections_its_evaluation_found(bgr_run):
    """On a BGR model (INPUT.FORMAT "BGR", as every R-50/R-101 COCO config), the Predictor finds what
    ``tools/train_net.py --eval-only`` found on the same images, which it reads in the config's channel
    order: from a file, an RGB array, a BGR array and an RGB tensor alike. The images are coloured (red
    and blue differ by 58 and 133 levels on average), so feeding the model RGB would change its detections."""
    from resnet_backbones.data import read_image

    shipped = load_config("faster_rcnn_R50.yaml", use_detectron2=False)
    assert (shipped.INPUT.FORMAT, list(shipped.MODEL.PIXEL_MEAN)) == ("BGR", [103.53, 116.28, 123.675])
    predictor = Predictor.from_config(QUICK, bgr_run.weights, bgr_run.opts, datasets=bgr_run.datasets)
    assert predictor.cfg.INPUT.FORMAT == "BGR"
    for image_id, path in bgr_run.paths.items():
        rgb = read_image(path)
        assert np.abs(rgb[..., 0].astype(int) - rgb[..., 2]).mean() > 50  # colour: the channel order counts
        reference = as_detections(_by_class_index(bgr_run.results[image_id], bgr_run.categories))  # decoded once
        for item, fmt in [(path, "RGB"), (rgb, "RGB"), (np.ascontiguousarray(rgb[:, :, ::-1]), "BGR"),
                          (torch.from_numpy(rgb).permute(2, 0, 1), "RGB")]:
            d = predictor(item, array_format=fmt)
            assert d.image_size == rgb.shape[:2]
            assert_same_detections(d, reference, box_atol=1e-3, score_atol=1e-5, mask_mismatch=1e-3, limit=20,
                                   min_count=20, what=f"{os.path.basename(path)} as {type(item).__name__} {fmt}")


def _demo_threshold(scores_per_image) -> float:
    """A --confidence-threshold that keeps 2 to 10 detections of every image (the demo prints the 10 best)
    and lies 0.01 or more from every score (so 2-decimal printing and float noise cannot move a detection
    across it): the one that keeps the most."""
    scores = sorted({s for ss in scores_per_image for s in ss})
    candidates = [(a + b) / 2 for a, b in zip(scores, scores[1:]) if b - a >= 0.02]
    fits = [t for t in candidates if all(2 <= sum(s >= t for s in ss) <= 10 for ss in scores_per_image)]
    assert fits, f"no threshold keeps 2 to 10 detections of every image: {scores_per_image}"
    return min(fits)


def test_demo_on_a_bgr_model_prints_the_evaluations_detections_with_their_json_names(bgr_run, tmp_path):
    """``tools/demo.py`` on the BGR model prints, for each image, the detections the evaluation found above
    the threshold: the same number, each with the score the evaluation gave it (to the 2 decimals printed)
    and the json name of the category id the evaluation gave it (the json lists its categories out of id
    order). So the demo feeds the model its channel order and names each class by category id."""
    names = {c["id"]: c["name"] for c in bgr_run.categories}
    paths = list(bgr_run.paths.values())
    threshold = _demo_threshold([[r["score"] for r in bgr_run.results[i]] for i in bgr_run.paths])
    demo = subprocess.run(
        [sys.executable, "tools/demo.py", "--config", QUICK, *dataset_args(bgr_run.folder), *bgr_run.opts,
         "MODEL.WEIGHTS", bgr_run.weights, "--confidence-threshold", str(threshold), "--input", *paths,
         "--output", str(tmp_path / "demo")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    lines = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in demo.stdout.splitlines() if ": " in line}
    for image_id, path in bgr_run.paths.items():
        expected = sorted((names[r["category_id"]], r["score"]) for r in bgr_run.results[image_id]
                          if r["score"] >= threshold)
        line = lines[path]
        assert line.startswith(f"{len(expected)} detections ("), (threshold, line, expected)
        printed = [entry.rsplit(" ", 1) for entry in line.split("(", 1)[1].rsplit(")", 1)[0].split(", ")]
        printed = sorted((name, float(score)) for name, score in printed)
        # Paired in order of (name, score): the pairing of two sorted lists that tolerances cannot fool.
        assert [n for n, _ in printed] == [n for n, _ in expected], (line, expected)
        assert all(abs(p - e) <= 0.005 + 1e-6 for (_, p), (_, e) in zip(printed, expected)), (line, expected)
    assert sorted(os.listdir(tmp_path / "demo")) == sorted(os.path.basename(p) for p in paths)


def test_class_names_follow_category_ids_whatever_order_the_json_lists_them(bgr_run, tmp_path):
    """Both engines number a json's categories by sorted id (detectron2's load_coco_json), so class k is
    the category with the (k+1)-th smallest id. The training json lists its categories out of that order
    ([11, 5, 9]); the same json listing them in another order ([9, 5, 11]) must give the same names.
    The Predictor names each detection of class k with that category's json name, and each box with the
    name of the category id the evaluation gave the same box."""
    from resnet_backbones.predictor import dataset_class_names

    with open(os.path.join(bgr_run.folder, "train.json")) as f:
        train = json.load(f)
    listed = [c["id"] for c in train["categories"]]
    assert listed != sorted(listed)  # else this test proves nothing
    expected = [c["name"] for c in sorted(train["categories"], key=lambda c: c["id"])]
    names_of_id = {c["id"]: c["name"] for c in train["categories"]}
    reordered = tmp_path / "reordered.json"
    reordered.write_text(json.dumps({**train, "categories": train["categories"][::-1]}))
    assert [c["id"] for c in json.loads(reordered.read_text())["categories"]] not in (listed, sorted(listed))
    image_id, path = next(iter(bgr_run.paths.items()))
    evaluation = bgr_run.results[image_id]
    for train_json in (os.path.join(bgr_run.folder, "train.json"), str(reordered)):
        datasets = [("my_train", train_json, os.path.join(bgr_run.folder, "train")), bgr_run.datasets[1]]
        predictor = Predictor.from_config(QUICK, bgr_run.weights, bgr_run.opts, datasets=datasets)
        assert dataset_class_names(predictor.cfg) == expected, train_json
        assert predictor.class_names == expected, train_json
        d = predictor(path)
        assert len(set(d.classes.tolist())) >= 2  # names of several classes are checked
        assert all(d.class_names[i] == expected[int(d.classes[i])] for i in range(len(d))), (d.class_names, d.classes)
        pairing = assert_same_detections(d, _by_class_index(evaluation, bgr_run.categories), box_atol=1e-3,
                                         score_atol=1e-5, limit=20, min_count=20, what=train_json)
        assert len(pairing.pairs) >= 19  # unpaired: at most a tie at the top-20 cut
        assert all(d.class_names[i] == names_of_id[evaluation[j]["category_id"]] for i, j in pairing.pairs)


def test_above_keeps_each_detections_box_score_class_name_and_mask_together(bgr_run):
    """``Detections.above`` keeps the detections at or above the threshold, whole: each kept one is the
    unfiltered detection with the same box (found by content), with its score, class, name and mask, and
    every field has one entry per kept detection. Checked on the Predictor's output (best first) and on
    the same detections in another order, where the kept ones are not the first ones."""
    predictor = Predictor.from_config(QUICK, bgr_run.weights, bgr_run.opts, datasets=bgr_run.datasets)
    full = predictor(next(iter(bgr_run.paths.values())))
    assert full.masks is not None and len(set(full.class_names)) >= 2
    scores = sorted(full.scores.tolist())
    threshold = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2  # half of them kept
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(0))
    shuffled = Detections(full.boxes[perm], full.scores[perm], full.classes[perm],
                          [full.class_names[int(i)] for i in perm], full.masks[perm], full.image_size)
    for dets in (full, shuffled):
        kept = dets.above(threshold)
        n = int((full.scores >= threshold).sum())
        assert 0 < n < len(full)
        assert len(kept) == len(kept.boxes) == len(kept.classes) == len(kept.class_names) == len(kept.masks) == n
        assert kept.image_size == full.image_size and (kept.scores >= threshold).all()
        for i in range(n):
            same_box = [j for j in range(len(full)) if torch.equal(full.boxes[j], kept.boxes[i])]
            assert any(full.scores[j] == kept.scores[i] and full.classes[j] == kept.classes[i]
                       and full.class_names[j] == kept.class_names[i] and torch.equal(full.masks[j], kept.masks[i])
                       for j in same_box), f"kept detection {i} is no unfiltered detection: {kept.boxes[i].tolist()}"
        # Every detection at or above the threshold is kept (by content: the boxes as a set).
        above = full.boxes[full.scores >= threshold]
        assert sorted(map(tuple, kept.boxes.tolist())) == sorted(map(tuple, above.tolist()))
    none = full.above(2.0)
    assert len(none) == 0 and none.class_names == [] and none.masks.shape == (0, *full.image_size)
