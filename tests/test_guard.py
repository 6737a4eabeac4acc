"""The divergence guard (resnet_backbones.divergence), the hints (resnet_backbones.hints) and their use by
both engines: no checkpoint of a diverged state."""
import logging
import math
import os
import random
import re

import pytest
import torch

from resnet_backbones.divergence import LossGuard
from resnet_backbones.errors import DivergenceError
from resnet_backbones.hints import evaluation_hint, random_frozen_bn_warning
from resnet_backbones.tv.train import Trainer

from test_train import QUICK, tiny_cfg

SPIKE_AT = 22  # 0-based; checkpoints every 5 iterations: model_0000019.pth is the last one before it
# Healthy from scratch at this LR (at 0.02 without warm-up the tiny run diverges by itself near iteration 23).
GUARDED = ["SOLVER.MAX_ITER", "30", "SOLVER.CHECKPOINT_PERIOD", "5", "SOLVER.WARMUP_ITERS", "10",
           "SOLVER.BASE_LR", "0.005"]


@pytest.fixture(scope="module", autouse=True)
def synthetic_data(tmp_path_factory):
    os.environ.setdefault("RESNET_BACKBONES_DATA", str(tmp_path_factory.mktemp("rbdata")))


def guard(threshold=20.0, warmup_iters=0, output_dir="/nonexistent"):
    return LossGuard(threshold=threshold, warmup_iters=warmup_iters, output_dir=output_dir, advice="ADVICE.")


def feed(g, values, start=0):
    for i, v in enumerate(values, start):
        g.observe(i, {"loss_a": v / 2, "loss_b": v / 2})


def healthy_losses(n=2000, seed=0):
    """From ~2.5 down to ~0.3, log-normal noise, batches 2-3x the median, and a few back at the start (8x)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        v = (0.3 + 2.2 * math.exp(-i / 300)) * math.exp(rng.gauss(0, 0.25))
        v *= rng.choice([2.5, 3.0]) if rng.random() < 0.03 else 1.0
        out.append(2.5 if rng.random() < 0.002 else v)
    return out


def test_quiet_during_warmup_and_before_the_window_fills():
    g = guard(warmup_iters=50)
    feed(g, [1.0] * 30 + [100.0] + [1.0] * 10)  # iteration 30 < SOLVER.WARMUP_ITERS
    g = guard()
    feed(g, [1.0] * 10 + [100.0])  # 10 values: too few for a median to judge by
    assert "healthy" in g.summary() and "NOT" not in g.summary()


def test_quiet_on_a_noisy_healthy_run():
    g = guard(warmup_iters=50)
    feed(g, healthy_losses())
    ratio, _ = g.largest
    assert 3 < ratio < 20 and g.stopped is None
    assert "Training health: healthy" in g.summary()


def test_fires_on_a_100x_spike_with_iteration_losses_median_and_advice():
    g = guard(warmup_iters=5)
    feed(g, [1.0, 1.5] * 15)
    with pytest.raises(DivergenceError) as e:
        g.observe(30, {"loss_cls": 60.0, "loss_box_reg": 65.0})
    msg = str(e.value)
    assert "iteration 30" in msg and "median 1.25" in msg and "100x" in msg
    assert "loss_cls: 60" in msg and "loss_box_reg: 65" in msg and "ADVICE." in msg
    assert "No checkpoint has been written yet (/nonexistent/last_checkpoint is absent)" in msg
    assert "NOT healthy: diverged at iteration 30" in g.summary()


def test_threshold_zero_turns_it_off_but_still_measures():
    g = guard(threshold=0)
    feed(g, [1.0] * 30 + [100.0])
    assert g.largest == (100.0, 30) and "guard off" in g.summary()
    with pytest.raises(ValueError, match="DIVERGENCE_THRESHOLD"):
        guard(threshold=0.5)


def test_non_finite_names_the_last_checkpoint(tmp_path):
    g = guard(output_dir=str(tmp_path))
    (tmp_path / "model_0000009.pth").write_bytes(b"")
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    with pytest.raises(FloatingPointError, match=r"iteration 3: \{loss_a: nan.*" + re.escape(str(tmp_path / "model_0000009.pth"))):
        feed(g, [1.0, 1.0, 1.0, float("nan")])
    assert "NOT healthy: non-finite loss at iteration 3" in g.summary()


def test_evaluation_hint_only_when_nothing_was_found():
    cfg = tiny_cfg("/tmp")
    assert evaluation_hint(cfg, {"AP": 12.0}, 40) is None
    assert "no detections" in evaluation_hint(cfg, {"AP": 0.0}, 0)
    assert "bbox AP 0.000, about 0" in evaluation_hint(cfg, {"AP": 0.0}, 40)
    assert "bbox AP 0.007" in evaluation_hint(cfg, {"AP": 0.007}, 6992)  # 2 iterations of the quick schedule
    hint = evaluation_hint(cfg, None)  # detectron2's COCOEvaluator without predictions
    assert "no detections" in hint and "NUM_CLASSES=3" in hint and "SCORE_THRESH_TEST=0.05" in hint


def spike_forward(model, at, factor=1e4):
    """Multiply every loss of the ``at``-th training forward (0-based) by ``factor``: a finite blow-up."""
    real, calls = model.forward, []

    def forward(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        return {k: v * factor for k, v in out.items()} if model.training and len(calls) == at + 1 else out

    model.forward = forward


def assert_stopped_before_checkpointing(out, msg, caplog):
    assert f"diverged at iteration {SPIKE_AT}" in msg and "median" in msg
    assert "SOLVER.BASE_LR (now 0.005)" in msg and "SOLVER.WARMUP_ITERS (now 10)" in msg and "CLIP_TYPE norm" in msg
    assert f"written before this iteration: {out / 'model_0000019.pth'}" in msg
    assert (out / "last_checkpoint").read_text() == "model_0000019.pth"
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == [
        "model_0000004.pth", "model_0000009.pth", "model_0000014.pth", "model_0000019.pth"]
    assert f"NOT healthy: diverged at iteration {SPIKE_AT}" in caplog.text


def test_random_frozen_bn_warning_only_without_weights():
    kw = dict(norm_key="NORM", weights_key="W", fix="train BN")
    assert random_frozen_bn_warning("FrozenBN", True, **kw) is None
    assert random_frozen_bn_warning("BN", False, **kw) is None
    text = random_frozen_bn_warning("FrozenBN", False, **kw)
    assert "NORM=FrozenBN" in text and "W is empty" in text and text.endswith("train BN.")


@pytest.mark.parametrize("opts,resume,warns", [
    (["MODEL.RESNETS.NORM", "FrozenBN"], False, True),                                  # random FrozenBN
    (["MODEL.RESNETS.NORM", "FrozenBN", "MODEL.WEIGHTS", "/some/R-18.pkl"], False, False),  # weights load
    (["MODEL.RESNETS.NORM", "FrozenBN"], True, False),                   # resumes OUTPUT_DIR's checkpoint
    ([], False, False),                                                  # the quick schedule: trainable BN
])
def test_train_net_warns_before_training_a_random_frozen_bn(monkeypatch, capsys, tmp_path, opts, resume, warns):
    import resnet_backbones.tv
    from resnet_backbones import train_net

    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    (tmp_path / "model_0000009.pth").write_bytes(b"")
    monkeypatch.setattr(resnet_backbones.tv, "launch", lambda *args, **kwargs: None)
    argv = ["--config", QUICK, "--engine", "torchvision", *opts, "OUTPUT_DIR", str(tmp_path)]
    assert train_net.main(argv + (["--resume"] if resume else [])) == 0
    err = capsys.readouterr().err
    assert ("warning: training a randomly initialised body with MODEL.RESNETS.NORM=FrozenBN" in err) is warns
    if warns:
        assert "MODEL.RESNETS.NORM BN" in err and "MODEL.BACKBONE.FREEZE_AT 0" in err


@pytest.mark.parametrize("opts,warns", [
    ([], True),                                                          # C4 from random weights
    (["MODEL.WEIGHTS", "output/pretrain/R-50_C4_synthetic/model_final_backbone.pth"], False),
])
def test_train_net_warns_before_training_c4_from_scratch(monkeypatch, capsys, tmp_path, opts, warns):
    """The C4 quick schedule without MODEL.WEIGHTS gets a warning naming the pretraining command; with weights
    (not read here: the launch is replaced) none; the FPN quick schedule gets none (the test above)."""
    import resnet_backbones.tv
    from resnet_backbones import train_net

    monkeypatch.setattr(resnet_backbones.tv, "launch", lambda *args, **kwargs: None)
    argv = ["--config", "quick_schedules/faster_rcnn_R50_C4_synthetic.yaml", "--engine", "torchvision", *opts,
            "OUTPUT_DIR", str(tmp_path)]
    assert train_net.main(argv) == 0
    err = capsys.readouterr().err
    assert ("warning: training the C4 detector (MODEL.ROI_HEADS.NAME=Res5ROIHeads) from random weights" in err) is warns
    if warns:
        assert "python tools/pretrain_net.py --config pretrain/R-50_C4_synthetic.yaml" in err


def test_torchvision_engine_stops_on_a_spike_before_checkpointing(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="resnet_backbones")
    trainer = Trainer(tiny_cfg(tmp_path, *GUARDED))
    spike_forward(trainer.model, SPIKE_AT)
    with pytest.raises(DivergenceError) as e:
        trainer.train()
    assert_stopped_before_checkpointing(tmp_path, str(e.value), caplog)
    saved = torch.load(tmp_path / "model_0000019.pth", weights_only=True)
    assert saved["iteration"] == 20  # written at iteration 19, not touched since


def test_torchvision_engine_non_finite_says_no_checkpoint_yet(tmp_path):
    trainer = Trainer(tiny_cfg(tmp_path))
    spike_forward(trainer.model, 0, float("nan"))
    with pytest.raises(FloatingPointError, match="iteration 0.*No checkpoint has been written yet "
                                                 r"\(.*last_checkpoint is absent\)"):
        trainer.train()
    assert not os.path.exists(tmp_path / "last_checkpoint")


def test_detectron2_engine_stops_on_a_spike_before_checkpointing(tmp_path, caplog):
    pytest.importorskip("detectron2")
    pytest.importorskip("detectron2.modeling")
    from resnet_backbones.config import load_config
    from resnet_backbones.d2.hooks import DivergenceHook
    from resnet_backbones.d2.train import Trainer as D2Trainer, register_datasets

    caplog.set_level(logging.INFO, logger="resnet_backbones")
    cfg = load_config(QUICK, [
        "OUTPUT_DIR", str(tmp_path), "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "INPUT.MAX_SIZE_TRAIN", "96", "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "0", *GUARDED],
        use_detectron2=True)
    register_datasets(cfg)
    trainer = D2Trainer(cfg)
    assert isinstance(trainer._hooks[0], DivergenceHook)  # before PeriodicCheckpointer
    trainer.resume_or_load(resume=False)
    spike_forward(trainer.model, SPIKE_AT)
    with pytest.raises(DivergenceError) as e:
        trainer.train()
    assert_stopped_before_checkpointing(tmp_path, str(e.value), caplog)
