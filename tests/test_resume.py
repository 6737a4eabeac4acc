"""``--resume`` continues the LR schedule exactly, on both engines: a run resumed from the checkpoint an
uninterrupted run wrote half-way uses, at every later iteration, the learning rate the uninterrupted run
used. The schedule has a warmup and a step (detectron2's WarmupMultiStepLR), so a scheduler that restarts
on resume (warming up again, its step moved) cannot pass. The losses after a resume are tested in
tests/test_train.py."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from resnet_backbones.config import load_config

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from own_data import TINY, dataset_args, write_coco_folder  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "quick_schedules/faster_rcnn_R18_synthetic.yaml"
# 6 iterations of one image: warmup over the first 2, BASE_LR x 0.1 after 5 scheduler steps, a checkpoint after
# iteration 3 (the one a run stopped there leaves; --resume continues with the 4th). No evaluation.
SCHEDULE = ["SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "6", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "(5,)",
            "SOLVER.CHECKPOINT_PERIOD", "3", "SOLVER.BASE_LR", "0.02", "DATASETS.TEST", "()"]
CHECKPOINT = "model_0000002.pth"  # both engines' name: the 0-based index of the 3rd iteration


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_coco_folder(str(tmp_path_factory.mktemp("my_data")), num_train=4, num_val=1)


def stopped_after_three(run_dir, into) -> None:
    """``into`` as a run stopped after iteration 3 (by SIGINT, or a lost machine) leaves it: the checkpoint
    of that iteration, which the uninterrupted run in ``run_dir`` wrote, named by OUTPUT_DIR/last_checkpoint."""
    os.makedirs(into)
    shutil.copy(os.path.join(run_dir, CHECKPOINT), into)
    with open(os.path.join(into, "last_checkpoint"), "w") as f:
        f.write(CHECKPOINT)


def test_torchvision_resume_continues_the_lr_schedule_exactly(folder, tmp_path):
    """``tools/train_net.py --engine torchvision --resume``: the ``lr`` of each iteration after the
    checkpoint (OUTPUT_DIR/metrics.json, one record per iteration) equals the uninterrupted run's."""
    def train(out, *flags):
        r = subprocess.run([sys.executable, "tools/train_net.py", "--config", QUICK, "--engine", "torchvision",
                            *flags, *dataset_args(folder), *TINY, *SCHEDULE, "OUTPUT_DIR", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        with open(out / "metrics.json") as f:
            return r.stdout + r.stderr, {row["iteration"]: row["lr"] for row in map(json.loads, f) if "lr" in row}

    _, straight = train(tmp_path / "straight")
    assert sorted(straight) == list(range(1, 7))
    # The record of iteration i holds the LR after its scheduler step: warmup (linear from 0.001 x), the base LR,
    # then a tenth of it: the schedule changes before the checkpoint and after it.
    warm = 0.02 * (0.001 + (1 - 0.001) / 2)
    assert [straight[i] for i in range(1, 7)] == pytest.approx([warm] + [0.02] * 3 + [0.002] * 2, rel=1e-6)

    stopped_after_three(tmp_path / "straight", tmp_path / "resumed")
    log, resumed = train(tmp_path / "resumed", "--resume")
    assert "at iteration 3" in log, log[-3000:]
    assert sorted(resumed) == [4, 5, 6]
    assert {i: resumed[i] for i in resumed} == {i: straight[i] for i in resumed}


def test_detectron2_resume_continues_the_lr_schedule_exactly(folder, tmp_path):
    """The detectron2 engine (DefaultTrainer, our checkpointer): a trainer that resumes as ``--resume`` does
    (``resume_or_load(resume=True)``) uses at each iteration after the checkpoint the LR the uninterrupted
    run used. Read from the EventStorage, where detectron2's LRScheduler hook puts the LR of every iteration
    (its metrics.json holds every 20th)."""
    pytest.importorskip("detectron2")
    from resnet_backbones.d2.backbone import register_backbones
    from resnet_backbones.d2.train import Trainer, register_datasets

    def train(out, resume):
        args = dataset_args(folder)
        datasets = [args[i + 1:i + 4] for i in range(0, len(args), 4)]
        cfg = load_config(QUICK, [*TINY, *SCHEDULE, "OUTPUT_DIR", str(out)], use_detectron2=True, datasets=datasets)
        register_backbones()
        register_datasets(cfg)
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=resume)
        start = trainer.start_iter
        trainer.train()
        return start, {it: lr for lr, it in trainer.storage.history("lr").values()}

    start, straight = train(tmp_path / "straight", False)
    assert start == 0 and sorted(straight) == list(range(6))
    # Iteration k (0-based) trains with the LR of k scheduler steps.
    warm = [0.02 * (0.001 + (1 - 0.001) * k / 2) for k in (0, 1)]
    assert [straight[k] for k in range(6)] == pytest.approx(warm + [0.02] * 3 + [0.002], rel=1e-6)

    stopped_after_three(tmp_path / "straight", tmp_path / "resumed")
    start, resumed = train(tmp_path / "resumed", True)
    assert start == 3 and sorted(resumed) == [3, 4, 5]
    assert resumed == {k: straight[k] for k in resumed}
