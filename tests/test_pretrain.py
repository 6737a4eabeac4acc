"""Classification pretraining (tools/pretrain_net.py, He et al. 2016, section 3.4) and its backbone file.

A short pretraining of the quarter-width ResNet-50 of the C4 quick schedule on a tiny ImageFolder of three
clearly different classes (horizontal bars, vertical bars, a square; random colours) learns them; its
OUTPUT_DIR/model_final_backbone.pth loads, bit for bit, into the C4 detector on both engines (conv1-res4 into
the body, res5 into the ROI head) and into a DC5 body; a detector config with other input conventions or
another architecture is refused with the keys to set; --resume continues exactly; two processes train as
one with their total batch; unreadable images stop the run before training with one error; 10-crop
evaluation averages the crops; the shipped ImageNet configs build the body of every depth.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_backbones.builders import build_body_from_cfg, build_fpn_from_cfg, build_res5_head_from_cfg
from resnet_backbones.config import load_config
from resnet_backbones.errors import ConfigError, WeightsError
from resnet_backbones.modeling import build_resnet
from resnet_backbones.pretrain.cli import load_pretrain_config, main
from resnet_backbones.pretrain.data import (ClassificationBatchSampler, ClassificationFolder, epoch_schedule,
                                            evaluation_crops)
from resnet_backbones.pretrain.model import build_classifier
from resnet_backbones.pretrain.train import BACKBONE_FILE, conventions_of, evaluate_classifier
from resnet_backbones.tv.model import build_model
from resnet_backbones.weights import FORMAT_TABLE, parse_weights, save_backbone_file
from resnet_backbones.weights.conventions import MSRA_CONVENTIONS, TORCHVISION_CONVENTIONS
from resnet_backbones.weights.resolve import load_model_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "pretrain/R-50_C4_synthetic.yaml"
C4 = "quick_schedules/faster_rcnn_R50_C4_synthetic.yaml"
DC5 = "quick_schedules/faster_rcnn_R50_DC5_synthetic.yaml"
# 40 px images: 32 px crops from a shorter side in [40, 48], tested at 40 (centre crop); 16 per batch.
SMALL = ["MODEL.DEVICE", "cpu", "MODEL.RESNET_BACKBONES.PRETRAIN.CROP_SIZE", "32",
         "MODEL.RESNET_BACKBONES.PRETRAIN.SCALE_RANGE", "[40, 48]", "MODEL.RESNET_BACKBONES.PRETRAIN.TEST_SIZE", "40",
         "SOLVER.IMS_PER_BATCH", "16", "SOLVER.WARMUP_ITERS", "5", "TEST.EVAL_PERIOD", "0",
         "MODEL.RESNET_BACKBONES.LOG_PERIOD", "1", "SEED", "0"]
# 50 iterations, LR / 10 after 40, a checkpoint after iteration 25 (model_0000024.pth: --resume continues at 26).
SCHEDULE = ["SOLVER.BASE_LR", "0.05", "SOLVER.MAX_ITER", "50", "SOLVER.STEPS", "(40,)", "SOLVER.CHECKPOINT_PERIOD", "25"]
HALF_WAY = "model_0000024.pth"
CLASSES = ("bars", "columns", "square")


def write_image_folder(root: str, n_train: int = 24, n_val: int = 10, size: int = 40, seed: int = 0) -> str:
    """``root/{train,val}/{bars,columns,square}/*.png``: 4 px bars every 8 px (horizontal or vertical, at a
    random phase) or one square, in a random colour on another, with noise; size x (size + 4) px."""
    rng = np.random.RandomState(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, name in enumerate(CLASSES):
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i in range(n):
                fg, bg = rng.randint(0, 256, 3), rng.randint(0, 256, 3)
                while np.abs(fg - bg).sum() < 150:
                    fg = rng.randint(0, 256, 3)
                img = np.empty((size, size + 4, 3), np.uint8)
                img[:] = bg
                phase = rng.randint(0, 8)
                if c == 0:
                    for y in range(phase, size, 8):
                        img[y:y + 4] = fg
                elif c == 1:
                    for x in range(phase, size + 4, 8):
                        img[:, x:x + 4] = fg
                else:
                    h = rng.randint(8, 14)
                    y, x = rng.randint(4, size - h - 3), rng.randint(4, size - h)
                    img[y:y + h, x:x + h] = fg
                img = np.clip(img.astype(int) + rng.randint(-10, 11, img.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(os.path.join(root, split, name, f"{i}.png"))
    return root


def pretrain(folder, out, *extra) -> None:
    """tools/pretrain_net.py in this process (a one-process launch calls the training function directly)."""
    code = main(["--config", CONFIG, "--data", str(folder), *SMALL, *extra, "OUTPUT_DIR", str(out)])
    assert code == 0


def metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(str(tmp_path_factory.mktemp("classes")))


@pytest.fixture(scope="module")
def pretrained(folder, tmp_path_factory):
    """OUTPUT_DIR of a 50-iteration pretraining (zero-init residual branches: from scratch at 16 images per
    batch the loss spikes without them)."""
    out = tmp_path_factory.mktemp("pretrained")
    pretrain(folder, out, *SCHEDULE, "MODEL.RESNET_BACKBONES.ZERO_INIT_RESIDUAL", "True")
    return out


def test_pretraining_learns_and_writes_a_backbone_file(pretrained):
    final = metrics(pretrained)[-1]
    # 3 classes (chance: 33 %), 30 validation images; 90 % on the machine it was written on.
    assert final["classification/top1"] >= 70, final
    assert sorted(r["iteration"] for r in metrics(pretrained) if "lr" in r) == list(range(1, 51))
    # The training error (Figure 4's thin curves): logged with every progress line, in %, falling from
    # chance (66.7 %) as the validation top-1 rises.
    train = [r["top1_error_train"] for r in metrics(pretrained) if "lr" in r]
    assert len(train) == 50 and all(0 <= e <= 100 for e in train) and train[-1] <= 50, train
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(pretrained))
    obj = torch.load(os.path.join(pretrained, BACKBONE_FILE), weights_only=True)
    assert obj["format"] == "resnet_backbones" and obj["format_version"] == 1
    assert obj["conventions"] == {"stride_in_1x1": False, "input_format": "RGB", "pixel_mean": [123.675, 116.28, 103.53],
                                  "pixel_std": [58.395, 57.12, 57.375], "name": "resnet_backbones pretraining"}
    assert obj["architecture"] == {"body": "resnet", "depth": 50, "block": "bottleneck", "num_groups": 1,
                                   "width_per_group": 16, "stem_out_channels": 64, "res2_out_channels": 64,
                                   "preactivation": False, "shortcuts": True, "norm": "BN"}
    assert obj["pretraining"]["classes"] == sorted(CLASSES) and obj["pretraining"]["iteration"] == 50
    # The body of the final checkpoint, without the classifier or BN counters.
    final_state = torch.load(os.path.join(pretrained, "model_final.pth"), weights_only=True)["model"]
    body = {k[len("backbone."):]: v for k, v in final_state.items()
            if k.startswith("backbone.") and not k.endswith("num_batches_tracked")}
    assert set(obj["model"]) == set(body) and "linear.weight" in final_state
    assert all(torch.equal(obj["model"][k], v) for k, v in body.items())
    weights = parse_weights(obj, source="file")
    assert weights.format == "resnet_backbones" and weights.conventions.input_format == "RGB"


def _file_state(pretrained):
    return torch.load(os.path.join(pretrained, BACKBONE_FILE), weights_only=True)["model"]


def test_backbone_file_loads_into_the_torchvision_engines_c4_and_dc5_detectors(pretrained):
    path = str(pretrained / BACKBONE_FILE)
    state = _file_state(pretrained)
    cfg = load_config(C4, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", path], use_detectron2=False)
    model = build_model(cfg)
    assert load_model_weights(model, cfg) == "backbone"
    body, head = model.backbone.state_dict(), model.roi_heads.res5.state_dict()
    for k, v in state.items():  # conv1-res4 in the body, res5 in the C4 ROI head, bit for bit
        assert torch.equal(head[k[len("res5."):]] if k.startswith("res5.") else body[k], v), k
    assert any(k.startswith("res5.") for k in state) and not any(k.startswith("res5.") for k in body)
    cfg = load_config(DC5, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", path], use_detectron2=False)
    model = build_model(cfg)
    load_model_weights(model, cfg)
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in state.items())
    assert model.backbone.res5[0].conv2.dilation == (2, 2)  # the dilated res5 of DC5 takes the same weights


def test_backbone_file_loads_into_the_detectron2_engines_c4_detector(pretrained):
    pytest.importorskip("detectron2")
    from detectron2.modeling import build_model as d2_build_model

    from resnet_backbones.d2.backbone import register_backbones
    from resnet_backbones.d2.checkpoint import ResnetBackbonesCheckpointer

    path = str(pretrained / BACKBONE_FILE)
    cfg = load_config(C4, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", path], use_detectron2=True)
    register_backbones()
    model = d2_build_model(cfg)
    ResnetBackbonesCheckpointer(model, cfg=cfg).load(path)
    body, head = model.backbone.state_dict(), model.roi_heads.res5.state_dict()  # detectron2's Res5ROIHeads
    for k, v in _file_state(pretrained).items():
        assert torch.equal(head[k[len("res5."):]] if k.startswith("res5.") else body[k], v), k


@pytest.mark.parametrize("overrides, error, match", [
    (["INPUT.FORMAT", "BGR"], ConfigError, r"resnet_backbones pretraining input conventions; set INPUT.FORMAT RGB"),
    (["MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"], ConfigError, r"set MODEL.PIXEL_STD \[58.395, 57.12, 57.375\]"),
    (["MODEL.RESNETS.STRIDE_IN_1X1", "True"], ConfigError, r"set MODEL.RESNETS.STRIDE_IN_1X1 False"),
    (["MODEL.RESNETS.WIDTH_PER_GROUP", "32"], WeightsError,
     r"width_per_group 16 \(this body: 32\)\. Set MODEL.RESNETS.WIDTH_PER_GROUP 16"),
    (["MODEL.RESNETS.NORM", "GN", "MODEL.RESNETS.WIDTH_PER_GROUP", "32", "MODEL.RESNETS.RES2_OUT_CHANNELS", "128"],
     WeightsError, r"Set MODEL.RESNETS.WIDTH_PER_GROUP 16, MODEL.RESNETS.RES2_OUT_CHANNELS 64, MODEL.RESNETS.NORM BN"),
])
def test_a_detector_config_of_other_conventions_or_architecture_is_refused(pretrained, overrides, error, match):
    """As for a torchvision or MSRA file: the conventions the file records against INPUT.FORMAT /
    MODEL.PIXEL_MEAN / PIXEL_STD / MODEL.RESNETS.STRIDE_IN_1X1, its architecture against the body; the message
    names the keys and the values to set."""
    path = str(pretrained / BACKBONE_FILE)
    cfg = load_config(C4, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", path, *overrides], use_detectron2=False)
    with pytest.raises(error, match=match):
        load_model_weights(build_model(cfg), cfg)


def test_resume_continues_exactly(folder, pretrained, tmp_path):
    """A run resumed from the half-way checkpoint (as a run stopped there leaves it) trains iterations 26-50
    with the uninterrupted run's LR and losses, and ends with the same backbone file."""
    shutil.copy(pretrained / HALF_WAY, tmp_path)
    (tmp_path / "last_checkpoint").write_text(HALF_WAY)
    pretrain(folder, tmp_path, *SCHEDULE, "MODEL.RESNET_BACKBONES.ZERO_INIT_RESIDUAL", "True", "--resume")
    straight = {r["iteration"]: r for r in metrics(pretrained) if "lr" in r}
    resumed = {r["iteration"]: r for r in metrics(tmp_path) if "lr" in r}
    assert sorted(resumed) == list(range(26, 51))
    assert {i: (r["lr"], r["total_loss"]) for i, r in resumed.items()} == \
        {i: (straight[i]["lr"], straight[i]["total_loss"]) for i in resumed}
    # The record of iteration i holds the LR after its scheduler step: the step at 40 falls after the checkpoint.
    assert straight[39]["lr"] == pytest.approx(0.05) and straight[40]["lr"] == pytest.approx(0.005)
    a, b = _file_state(pretrained), _file_state(tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_train_as_one_with_their_total_batch(folder, tmp_path):
    """``--num-gpus 2`` (two CPU processes on gloo, 4 images each) against one process of 8 images: each
    epoch is one permutation, process r takes every 2nd image from r (DistributedSampler) and an image's
    augmentation follows from its global position, so the global batches are the same. Without a norm that
    keeps per-process statistics, the losses and the final weights agree to float rounding; rank 0's final
    weights are the backbone file."""
    no_norm = ["MODEL.RESNETS.NORM", "", "MODEL.RESNET_BACKBONES.ZERO_INIT_RESIDUAL", "False", "SOLVER.IMS_PER_BATCH", "8", "SOLVER.BASE_LR", "0.002", "SOLVER.WARMUP_ITERS",
               "0", "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(3,)", "SOLVER.CHECKPOINT_PERIOD", "100"]
    two = tmp_path / "two"
    r = subprocess.run([sys.executable, "tools/pretrain_net.py", "--config", CONFIG, "--data", folder, *SMALL, *no_norm,
                        "--num-gpus", "2", "OUTPUT_DIR", str(two)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert (two / "log.txt.rank1").is_file()
    pretrain(folder, tmp_path / "one", *no_norm)
    losses = [[m["total_loss"] for m in metrics(out) if "lr" in m] for out in (two, tmp_path / "one")]
    assert len(losses[0]) == 4 and losses[0] == pytest.approx(losses[1], rel=1e-4)
    final = torch.load(two / "model_final.pth", weights_only=True)["model"]
    a, b = _file_state(two), _file_state(tmp_path / "one")
    assert all(torch.equal(final["backbone." + k], v) for k, v in a.items())
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5), k


def test_unreadable_images_stop_the_run_before_training(folder, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    (data / "train" / "bars" / "garbage.png").write_bytes(b"not a png at all")
    (data / "val" / "square" / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    code = main(["--config", CONFIG, "--data", str(data), *SMALL, "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: 2 image file(s)"), err
    assert "garbage.png" in err[0] and "empty.jpg" in err[0] and "SKIP_UNREADABLE_IMAGES True" in err[0]
    assert not (out / "last_checkpoint").exists()
    # Left out instead, with the key that says so: training runs on the rest.
    pretrain(data, out, "SOLVER.MAX_ITER", "2", "MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES", "True")
    assert (out / BACKBONE_FILE).is_file()


def test_ten_crops_are_the_corners_and_centre_of_the_image_and_of_its_flip():
    image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (40, 52, 3), dtype=np.uint8))
    crops = evaluation_crops(image, crop=24, test_size=40, ten_crop=True)
    assert len(crops) == 10 and all(c.shape == (24, 24, 3) for c in crops)
    resized = np.asarray(image)  # shorter side already 40
    assert np.array_equal(crops[0], resized[:24, :24]) and np.array_equal(crops[3], resized[-24:, -24:])
    assert np.array_equal(crops[4], resized[8:32, 14:38])  # the centre
    # The second five are five_crop of the mirrored image: its top-left is the mirrored top-right, ...
    for flipped, original in ((5, 1), (6, 0), (7, 3), (8, 2), (9, 4)):
        assert np.array_equal(crops[flipped], crops[original][:, ::-1]), flipped
    centre = evaluation_crops(image, crop=24, test_size=32, ten_crop=False)
    assert len(centre) == 1 and centre[0].shape == (24, 24, 3)


class _CentrePixel(torch.nn.Module):
    """A toy classifier: the logits are the colour of the crop's centre pixel (3 classes: R, G, B)."""

    def forward(self, images):
        c = images.shape[-1] // 2
        return images[:, :, c, c].float() * 0.1


def test_ten_crop_evaluation_averages_the_crops_scores(tmp_path):
    """An image red everywhere but for a blue centre: its centre crop says blue, eight of its ten crops say
    red; 10-crop evaluation averages the ten crops' softmax scores (He et al. 2016, section 3.4)."""
    samples = []
    for label, colour in enumerate(((255, 0, 0), (0, 255, 0))):
        img = np.zeros((40, 40, 3), np.uint8)
        img[:] = colour
        img[16:24, 16:24] = (0, 0, 255)
        path = str(tmp_path / f"{label}.png")
        Image.fromarray(img).save(path)
        samples.append((path, label))
    results = {}
    for ten in (False, True):
        ds = ClassificationFolder(samples, train=False, input_format="RGB", crop=24, test_size=40, ten_crop=ten)
        assert tuple(ds[0][0].shape) == ((10 if ten else 1), 3, 24, 24)
        results[ten] = evaluate_classifier(_CentrePixel(), ds, torch.device("cpu"), batch_size=2)
    assert results[False]["top1"] == 0.0 and results[False]["top5"] == 100.0
    assert results[True]["top1"] == 100.0 and results[True]["top1_error"] == 0.0 and results[True]["images"] == 2


def test_batch_stream_is_distributed_sampler_order_whatever_the_process_count():
    """The global batch of every iteration (the processes' batches together) and each image's seed are the
    same for 1 and 2 processes, across an epoch boundary; ``start_iter`` continues the stream."""
    def global_batches(world, per_process, iterations, start=0):
        streams = [iter(ClassificationBatchSampler(12, per_process, seed=3, rank=r, world_size=world,
                                                   start_iter=start)) for r in range(world)]
        return [sorted(item for s in streams for item in next(s)) for _ in range(iterations)]

    one = global_batches(1, 8, 6)
    assert global_batches(2, 4, 6) == one
    assert global_batches(2, 4, 3, start=3) == one[3:]
    assert sorted(i for b in one[:3] for i, _ in b) == sorted(list(range(12)) * 2)  # 24 draws: two epochs


def test_shipped_configs_build_the_detectors_body_and_the_paper_schedule():
    """Every depth's ImageNet recipe and the quick ones load and build without training: the classifier's body
    has the detector body's state-dict keys and shapes (FPN: bottom_up; C4: the body and the res5 head)."""
    names = [f"pretrain/R-{d}.yaml" for d in (18, 34, 50, 101, 152)] + [CONFIG, "pretrain/R-18_synthetic.yaml"]
    for name in names:
        _, cfg = load_pretrain_config(name, ["MODEL.DEVICE", "cpu"])
        with torch.device("meta"):  # shapes and names without the cost of initialising R-152
            classifier = build_classifier(cfg, 1000)
            if cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeads":
                detector = dict(build_body_from_cfg(cfg).state_dict())
                detector.update({"res5." + k: v for k, v in build_res5_head_from_cfg(cfg).state_dict().items()})
            else:
                detector = build_fpn_from_cfg(cfg).bottom_up.state_dict()
        body = classifier.backbone.state_dict()
        assert {k: tuple(v.shape) for k, v in body.items()} == {k: tuple(v.shape) for k, v in detector.items()}, name
        assert classifier.linear.out_features == 1000
    # The paper's schedule in epochs on ImageNet-1k at 256 per batch: what the yaml's SOLVER keys say.
    for depth in (18, 50, 152):
        _, cfg = load_pretrain_config(f"pretrain/R-{depth}.yaml")
        p = cfg.MODEL.RESNET_BACKBONES.PRETRAIN
        assert epoch_schedule(p.EPOCHS, p.STEP_EPOCHS, 1_281_167, cfg.SOLVER.IMS_PER_BATCH) == \
            (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS), 5005) == (450450, (150150, 300300), 5005)
        assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY) == (0.1, 0.9, 0.0001)
        assert (list(p.SCALE_RANGE), p.CROP_SIZE) == ([256, 480], 224)
        # The conventions of the detector configs of the same depth (torchvision's for R-152).
        with torch.device("meta"):
            conventions = conventions_of(cfg, build_classifier(cfg, 10))
        want = TORCHVISION_CONVENTIONS if depth == 152 else MSRA_CONVENTIONS
        assert (conventions.input_format, conventions.pixel_mean, conventions.pixel_std) == \
            (want.input_format, want.pixel_mean, want.pixel_std)
        assert conventions.stride_in_1x1 == (None if depth == 18 else want.stride_in_1x1)


def test_backbone_files_of_pre_activation_and_vgg_bodies_load(tmp_path):
    """A pre-activation body (which no ImageNet format can fill) loads from its backbone file into an FPN
    detector, whose res2-res4 feature norms keep their initialisation; a VGG body into the VGG detector (the
    box head keeps its initialisation: the pretraining classifier has no fc6/fc7)."""
    _, cfg = load_pretrain_config("pretrain/R-18_synthetic.yaml", [
        "MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.WIDTH_PER_GROUP", "16",
        "MODEL.RESNET_BACKBONES.PREACTIVATION", "True", "MODEL.RESNET_BACKBONES.ZERO_INIT_RESIDUAL", "False"])
    classifier = build_classifier(cfg, 5)
    path = str(tmp_path / "preact.pth")
    save_backbone_file(path, classifier.backbone, conventions=conventions_of(cfg, classifier))
    det_cfg = load_config("quick_schedules/faster_rcnn_R18_synthetic.yaml", [
        "MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.WIDTH_PER_GROUP", "16",
        "MODEL.RESNET_BACKBONES.PREACTIVATION", "True", "MODEL.WEIGHTS", path], use_detectron2=False)
    model = build_model(det_cfg)
    load_model_weights(model, det_cfg)
    body = model.backbone.bottom_up.state_dict()
    source = torch.load(path, weights_only=True)["model"]
    assert "feature_norms.res5.norm.weight" in source and "feature_norms.res4.norm.weight" in body
    assert all(torch.equal(body[k], v) for k, v in source.items())
    with pytest.raises(WeightsError, match="MODEL.RESNET_BACKBONES.PREACTIVATION True"):
        plain = load_config("quick_schedules/faster_rcnn_R18_synthetic.yaml", [
            "MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.WIDTH_PER_GROUP", "16",
            "MODEL.WEIGHTS", path], use_detectron2=False)
        load_model_weights(build_model(plain), plain)

    vgg_cfg = load_config("quick_schedules/faster_rcnn_VGG16_synthetic.yaml", ["MODEL.DEVICE", "cpu",
                                                                              "MODEL.BACKBONE.FREEZE_AT", "0"])
    classifier = build_classifier(vgg_cfg, 5)
    path = str(tmp_path / "vgg.pth")
    save_backbone_file(path, classifier.backbone, conventions=conventions_of(vgg_cfg, classifier))
    assert parse_weights(torch.load(path, weights_only=True)).architecture == {
        "body": "vgg", "depth": 16, "conv1_channels": vgg_cfg.MODEL.RESNET_BACKBONES.VGG_CONV1_CHANNELS}
    det_cfg = load_config("quick_schedules/faster_rcnn_VGG16_synthetic.yaml", ["MODEL.DEVICE", "cpu",
                                                                              "MODEL.WEIGHTS", path], use_detectron2=False)
    model = build_model(det_cfg)
    assert load_model_weights(model, det_cfg) == "backbone"
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in torch.load(path, weights_only=True)["model"].items())


def test_the_format_table_tells_every_format_apart():
    """Exactly one row of FORMAT_TABLE answers for a file of each format; a backbone file is not taken for a
    detectron2 checkpoint although it has the same key names."""
    body = build_resnet(depth=18, norm="BN", out_features=["res5"]).state_dict()
    samples = {
        "resnet_backbones": ({f"{k}": v for k, v in body.items()}, {"format": "resnet_backbones"}),
        "detectron2": ({f"backbone.bottom_up.{k}": v for k, v in body.items()}, {}),
        "torchvision": ({"conv1.weight": 0, "layer1.0.conv1.weight": 0}, {}),
        "timm": ({"conv1.weight": 0, "layer1.0.conv1.weight": 0}, {"arch": "resnet50"}),
        "caffe2": ({"conv1_w": 0, "res2_0_branch2a_w": 0}, {}),
    }
    for name, (state, meta) in samples.items():
        assert [f.name for f in FORMAT_TABLE.values() if f.detect(set(state), meta)] == [name]
