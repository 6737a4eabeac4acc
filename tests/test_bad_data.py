"""Bad data on the torchvision engine: a small COCO layout damaged in each test; the
dataset checks at load time, unreadable images (error or skip), errors from loader workers, the
health line after a crash or a signal, SIGTERM's exit status, and --resume after a crash.
The detectron2 engine's half is tests/test_bad_data_detectron2.py."""
import json
import logging
import os
import shutil
import signal
import sys

import pytest
import torch
from PIL import Image

from resnet_backbones import train_net
from resnet_backbones.data import COCOInstances, DatasetValidationError, TrainingBatchSampler, get_dataset
from resnet_backbones.data.synthetic import generate_split
from resnet_backbones.data import check_dataset
from resnet_backbones.data.loader_errors import original_message, plain_worker_errors
from resnet_backbones.tv.train import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "quick_schedules/faster_rcnn_R18_synthetic.yaml"


def coco_layout(root, n_train=8, n_val=3):
    """``root/coco/{train2017,val2017,annotations/instances_{train,val}2017.json}``: synthetic shapes as
    JPEGs in COCO's layout, for ``coco_2017_train`` / ``coco_2017_val`` under $DETECTRON2_DATASETS."""
    coco = root / "coco"
    (coco / "annotations").mkdir(parents=True)
    for split, n, seed in (("train", n_train, 7), ("val", n_val, 8)):
        data = json.load(open(generate_split(str(root / "gen"), split, n, seed)))
        (coco / f"{split}2017").mkdir()
        for img in data["images"]:
            jpg = img["file_name"].replace(".png", ".jpg")
            Image.open(root / "gen" / split / img["file_name"]).save(coco / f"{split}2017" / jpg, quality=95)
            img["file_name"] = jpg
        (coco / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))
    shutil.rmtree(root / "gen")
    return coco


@pytest.fixture
def coco(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    return coco_layout(tmp_path / "datasets")


def train_argv(out, *extra, engine="torchvision"):
    return ["--config", QUICK, "--engine", engine, "OUTPUT_DIR", str(out), "DATASETS.TRAIN", "('coco_2017_train',)",
            "DATASETS.TEST", "()", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "1",
            "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64",
            "DATALOADER.NUM_WORKERS", "0", "MODEL.RESNET_BACKBONES.LOG_PERIOD", "1", *extra]


def run_cli(argv, capsys):
    status = train_net.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def health_line(text):
    lines = [line for line in text.splitlines() if "Training health:" in line]
    assert len(lines) == 1, text[-3000:]
    return lines[0]


def edit_json(path, change):
    data = json.load(open(path))
    change(data)
    path.write_text(json.dumps(data))


def damage_annotations(data):
    """The issue's four annotation damages, plus a box that is not four finite numbers."""
    a = data["annotations"]
    a[0]["category_id"] = 12                            # not a category of the json
    a[1]["bbox"] = [10.0, 10.0, -5.0, 8.0]              # negative width: dropped, counted
    a[2]["segmentation"] = [[1.0, 1.0, 9.0, 9.0]]       # a two-point polygon: dropped, counted
    a[3]["image_id"] = 999                              # an image that does not exist
    a[4]["bbox"] = [1.0, 2.0, float("nan"), 4.0]


def test_validation_names_every_problem_in_one_message(coco):
    ann = coco / "annotations" / "instances_train2017.json"
    edit_json(ann, damage_annotations)
    data = json.load(open(ann))
    os.remove(coco / "train2017" / data["images"][5]["file_name"])
    with pytest.raises(DatasetValidationError) as e:
        get_dataset("coco_2017_train")
    msg = str(e.value)
    a = data["annotations"]
    assert str(ann) in msg and "has 4 problem(s)" in msg
    assert f"1 listed images missing on disk: {coco / 'train2017' / data['images'][5]['file_name']} (image id 6)" in msg
    assert f"1 annotations whose category_id is not a category of the json: annotation {a[0]['id']} (image id " \
           f"{a[0]['image_id']}, file {data['images'][a[0]['image_id'] - 1]['file_name']}): category_id 12" in msg
    assert f"1 annotations whose image_id is not an image of the json: annotation {a[3]['id']} (image id 999)" in msg
    assert f"1 annotations whose bbox is not four finite numbers: annotation {a[4]['id']}" in msg and "nan" in msg
    assert "1 polygons of fewer than 3 points" in msg and "1 boxes of zero or negative width" in msg
    assert "tools/check_dataset.py coco_2017_train" in msg


def test_what_detectron2_drops_is_counted_and_logged_once(coco, caplog):
    ann = coco / "annotations" / "instances_train2017.json"
    edit_json(ann, lambda d: [d["annotations"][1].update(bbox=[10.0, 10.0, -5.0, 8.0]),
                              d["annotations"][2].update(segmentation=[[1.0, 1.0, 9.0, 9.0]])])
    with caplog.at_level(logging.WARNING):
        get_dataset("coco_2017_train")
        get_dataset("coco_2017_train")
    warnings = [r.getMessage() for r in caplog.records if "coco_2017_train" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "1 polygons of fewer than 3 points" in warnings[0] and "1 instances left without a polygon" in warnings[0]
    assert "1 boxes of zero or negative width or height" in warnings[0]


def test_missing_file_and_unknown_category_stop_before_the_first_iteration(coco, tmp_path, capsys):
    ann = coco / "annotations" / "instances_train2017.json"
    edit_json(ann, lambda d: d["annotations"][0].update(category_id=12))
    os.remove(coco / "train2017" / "000003.jpg")
    status, out, err = run_cli(train_argv(tmp_path / "out"), capsys)
    assert status == 2
    assert "Starting training" not in out + err and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "has 2 problem(s)" in errors[0]
    assert "000003.jpg (image id 4)" in err and "category_id 12" in err
    assert not (tmp_path / "out" / "last_checkpoint").exists()


def drawn_first_at(cfg_seed, iteration, n=8):
    """The index of an image the torchvision engine's sampler first draws in batch ``iteration``."""
    dataset = COCOInstances(get_dataset("coco_2017_train"))
    stream = iter(TrainingBatchSampler(dataset.aspect_ratio_is_wide(), 2, seed=cfg_seed))
    earlier = {i for _ in range(iteration) for i, _ in next(stream)}
    return dataset, [i for i, _ in next(stream) if i not in earlier][0]


def truncate(path, size=300):
    original = path.read_bytes()
    path.write_bytes(original[:size])
    return original


def test_truncated_jpeg_stops_naming_the_file_and_checkpoint_then_resume_continues(coco, tmp_path, capsys):
    """The issue's first row, with loader workers; a crash mid-run keeps the last periodic
    checkpoint, and --resume continues from it once the file is fixed."""
    dataset, index = drawn_first_at(0, 2)  # the quick schedule's SEED is 0
    bad = coco / "train2017" / dataset.coco.imgs[dataset.image_ids[index]]["file_name"]
    original = truncate(bad)
    out = tmp_path / "out"
    status, stdout, err = run_cli(train_argv(out, "DATALOADER.NUM_WORKERS", "1"), capsys)
    assert status == 2, err[-3000:]
    assert "Traceback" not in err and "Caught" not in err and "worker" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: training stopped at iteration 2: cannot read image {bad}")
    assert "MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES True" in line
    assert f"The last checkpoint: {out / 'model_0000001.pth'} (--resume continues from it)" in line
    health = health_line(stdout + err)
    assert "stopped at iteration 2 by an error (UnreadableImageError" in health and "healthy" not in health
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert torch.load(out / "model_0000001.pth", weights_only=True)["iteration"] == 2
    bad.write_bytes(original)
    status, stdout, err = run_cli(train_argv(out, "--resume"), capsys)
    assert status == 0, err[-3000:]
    assert f"resumed from {out / 'model_0000001.pth'} at iteration 2" in stdout + err
    assert "Training health: healthy" in stdout + err
    assert (out / "last_checkpoint").read_text() == "model_final.pth"


def test_unreadable_images_skipped_by_choice_are_logged_once_and_counted(coco, tmp_path, capsys):
    bad = coco / "train2017" / "000002.jpg"
    truncate(bad)
    # 12 iterations of 2 out of 8 images: three epochs, so the bad image is drawn more than once.
    status, stdout, err = run_cli(train_argv(tmp_path / "out", "SOLVER.MAX_ITER", "12", "SOLVER.CHECKPOINT_PERIOD",
                                             "100", "MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES", "True"), capsys)
    assert status == 0, err[-3000:]
    text = stdout + err
    assert text.count(f"skipping unreadable image (MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES): {bad}") == 1
    health = health_line(text)
    assert "Training health: healthy" in health and "1 unreadable image(s) skipped" in health


def test_sigterm_exits_143_after_the_checkpoint_and_resume_continues(coco, tmp_path, capsys, monkeypatch):
    step = Trainer.run_step

    def sigterm_during_iteration_1(self, iteration, *args):
        values = step(self, iteration, *args)
        if iteration == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, to the real handler
        return values

    monkeypatch.setattr(Trainer, "run_step", sigterm_during_iteration_1)
    out = tmp_path / "out"
    status, stdout, err = run_cli(train_argv(out, "SOLVER.CHECKPOINT_PERIOD", "100"), capsys)
    assert status == 143
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert "stopped by SIGTERM at iteration 2" in err
    health = health_line(stdout + err)
    assert "stopped at iteration 2 by SIGTERM" in health and "healthy" not in health
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    monkeypatch.setattr(Trainer, "run_step", step)
    status, stdout, err = run_cli(train_argv(out, "--resume"), capsys)
    assert status == 0 and "at iteration 2" in stdout + err


def test_eval_only_and_demo_name_an_unreadable_image_in_one_line(coco, tmp_path, capsys):
    bad = coco / "val2017" / "000001.jpg"
    truncate(bad)
    status, stdout, err = run_cli(train_argv(tmp_path / "out", "--eval-only", "DATASETS.TEST", "('coco_2017_val',)",
                                             "DATALOADER.NUM_WORKERS", "1"), capsys)
    assert status == 2 and "Traceback" not in err and "Caught" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: cannot read image {bad}") and "corrupt or not an image" in line

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import demo

    weights = tmp_path / "detector.pth"
    from resnet_backbones.config import load_config
    from resnet_backbones.tv.model import build_model

    torch.save({"model": build_model(load_config(QUICK, use_detectron2=False)).state_dict()}, weights)
    status = demo.main(["--config", QUICK, "--input", str(bad), "--output", str(tmp_path / "demo"),
                        "MODEL.WEIGHTS", str(weights), "DATASETS.TRAIN", "('coco_2017_train',)"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: cannot read image {bad}")


def test_check_dataset_decodes_everything(coco, capsys):
    assert check_dataset("coco_2017_val", progress=False) == []
    truncate(coco / "val2017" / "000002.jpg")
    (failure,) = check_dataset("coco_2017_val", workers=2, progress=False)
    assert failure.startswith(f"cannot read image {coco / 'val2017' / '000002.jpg'}")
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import check_dataset as tool

    assert tool.main(["coco_2017_val"]) == 2
    assert "000002.jpg" in capsys.readouterr().err


def _raise_in_worker(_):
    from resnet_backbones.data import DatasetError

    raise DatasetError("the worker's own message")


def test_a_worker_error_keeps_its_type_and_message_only():
    loader = torch.utils.data.DataLoader(list(range(2)), num_workers=1, collate_fn=_raise_in_worker)
    from resnet_backbones.data import DatasetError

    with pytest.raises(DatasetError) as e:
        with plain_worker_errors():
            next(iter(loader))
    assert str(e.value) == "the worker's own message" and e.value.__suppress_context__
    assert original_message(ValueError("plain")) is None
