"""Bad data on the detectron2 engine: the same damages as tests/test_bad_data.py."""
import logging
import os
import re
import signal

import pytest

pytest.importorskip("detectron2")
pytest.importorskip("detectron2.modeling")

from resnet_backbones.data import register_coco_instances  # noqa: E402
from resnet_backbones.d2.train import Trainer  # noqa: E402

from test_bad_data import coco_layout, edit_json, health_line, run_cli, train_argv, truncate  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_loggers():
    """Each CLI run here is in this one process: drop the handlers detectron2's (cached) setup_logger
    attached to the previous test's captured stdout, as a new process would not have them."""
    from detectron2.utils.logger import setup_logger

    # The torchvision engine's setup_logging (run in-process by other modules of a whole-suite run) leaves
    # root handlers on a captured stream that pytest has since closed: drop them too.
    root = logging.getLogger()
    for handler in [h for h in root.handlers if type(h) in (logging.StreamHandler, logging.FileHandler)]:
        root.removeHandler(handler)
    yield
    setup_logger.cache_clear()
    for name in ("detectron2", "d2", "resnet_backbones", "fvcore"):
        for handler in list(logging.getLogger(name).handlers):
            logging.getLogger(name).removeHandler(handler)


@pytest.fixture
def coco(tmp_path):
    """The layout registered under names unique to this test (detectron2's DatasetCatalog keeps the
    first function registered for a name)."""
    coco = coco_layout(tmp_path / "datasets")
    tag = tmp_path.name
    for split in ("train", "val"):
        register_coco_instances(f"bad_{split}_{tag}", str(coco / "annotations" / f"instances_{split}2017.json"),
                                str(coco / f"{split}2017"))
    return coco, f"('bad_train_{tag}',)", f"('bad_val_{tag}',)"


def d2_argv(out, train, *extra):
    return train_argv(out, "DATASETS.TRAIN", train, *extra, engine="detectron2")


def test_missing_file_and_unknown_category_stop_before_the_first_iteration(coco, tmp_path, capsys):
    root, train, _ = coco
    edit_json(root / "annotations" / "instances_train2017.json", lambda d: d["annotations"][0].update(category_id=12))
    os.remove(root / "train2017" / "000003.jpg")
    status, out, err = run_cli(d2_argv(tmp_path / "out", train), capsys)
    assert status == 2 and "Traceback" not in err and "Starting training" not in out + err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "has 2 problem(s)" in line and "000003.jpg (image id 4)" in err and "category_id 12" in err


def test_truncated_jpeg_stops_naming_the_file_with_workers(coco, tmp_path, capsys):
    root, train, _ = coco
    bad = root / "train2017" / "000002.jpg"
    truncate(bad)
    out = tmp_path / "out"
    status, stdout, err = run_cli(d2_argv(out, train, "SOLVER.MAX_ITER", "8", "DATALOADER.NUM_WORKERS", "1"), capsys)
    assert status == 2, err[-3000:]
    assert "Traceback" not in stdout + err and "Caught" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    m = re.match(rf"error: training stopped at iteration (\d+): cannot read image {re.escape(str(bad))} ", line)
    assert m, line
    assert "MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES True" in line
    it = int(m.group(1))
    assert (f"The last checkpoint: {out / f'model_{it - 1:07d}.pth'}" if it else "No checkpoint has been written yet") in line
    health = health_line(stdout + err)
    assert f"stopped at iteration {it} by an error (UnreadableImageError" in health and "healthy" not in health


def test_unreadable_images_skipped_by_choice_are_logged_once_and_counted(coco, tmp_path, capsys):
    root, train, _ = coco
    # Half the images bad: detectron2's MapDataset maps a random other image for each one skipped, and
    # that can be a bad one again, so in 4 iterations every bad image is met, most of them twice.
    bad = [root / "train2017" / f"00000{i}.jpg" for i in (1, 2, 4, 6)]
    for path in bad:
        truncate(path)
    status, stdout, err = run_cli(d2_argv(tmp_path / "out", train, "SOLVER.CHECKPOINT_PERIOD", "100",
                                          "MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES", "True"), capsys)
    assert status == 0, err[-3000:]
    text = stdout + err
    logged = [p for p in bad
              if text.count(f"skipping unreadable image (MODEL.RESNET_BACKBONES.SKIP_UNREADABLE_IMAGES): {p}") == 1]
    assert logged and not any(text.count(f"SKIP_UNREADABLE_IMAGES): {p}") > 1 for p in bad)
    health = health_line(text)
    assert "Training health: healthy" in health and f"{len(logged)} unreadable image(s) skipped" in health


def test_sigterm_checkpoints_exits_143_and_resume_continues(coco, tmp_path, capsys, monkeypatch):
    root, train, _ = coco
    step = Trainer.run_step

    def sigterm_during_iteration_0(self):
        step(self)
        if self.iter == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, to the real handler

    monkeypatch.setattr(Trainer, "run_step", sigterm_during_iteration_0)
    out = tmp_path / "out"
    argv = d2_argv(out, train, "SOLVER.CHECKPOINT_PERIOD", "100", "SOLVER.MAX_ITER", "2")
    status, stdout, err = run_cli(argv, capsys)
    assert status == 143, err[-3000:]
    assert (out / "last_checkpoint").read_text() == "model_0000000.pth"
    assert "stopped by SIGTERM at iteration 1" in err
    health = health_line(stdout + err)
    assert "stopped at iteration 1 by SIGTERM" in health and "healthy" not in health
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    monkeypatch.setattr(Trainer, "run_step", step)
    status, stdout, err = run_cli(argv + ["--resume"], capsys)
    assert status == 0 and "Starting training from iteration 1" in stdout + err


def test_eval_only_names_an_unreadable_image_in_one_line(coco, tmp_path, capsys):
    root, train, val = coco
    bad = root / "val2017" / "000001.jpg"
    truncate(bad)
    status, stdout, err = run_cli(d2_argv(tmp_path / "out", train, "--eval-only", "DATASETS.TEST", val,
                                          "DATALOADER.NUM_WORKERS", "1"), capsys)
    assert status == 2 and "Traceback" not in err and "Caught" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: cannot read image {bad}") and "corrupt or not an image" in line
