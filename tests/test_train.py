"""Training, resume, DDP, evaluation and demo on the synthetic dataset (CPU, minutes)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from resnet_backbones.config import ConfigError, load_config
from resnet_backbones.tv.train import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "quick_schedules/faster_rcnn_R18_synthetic.yaml"
# The main job's bbox AP50 after its full schedule must reach its seed spread's mean - 3 sd (torchvision 58.2 +- 2.0,
# detectron2 57.5 +- 0.7 over three seeds each; configs/quick_schedules/NOTES.md). CI checks it on the torchvision
# engine; tests/test_detectron2.py trains the detectron2 engine for half the schedule.
MAIN_JOB_AP50_BOUND = 52.0
# The main job's image sizes and FPN width (faster_rcnn_R18_synthetic.yaml), for the Mask R-CNN quick schedule.
MAIN_JOB_SIZES = ("MODEL.FPN.OUT_CHANNELS", "64", "INPUT.MIN_SIZE_TRAIN", "(64, 80, 96)", "INPUT.MAX_SIZE_TRAIN", "160",
                  "INPUT.MIN_SIZE_TEST", "88", "INPUT.MAX_SIZE_TEST", "160")
# With them, the mask head at the same width (64 channels instead of 256).
SMALL_MASK_RCNN = (*MAIN_JOB_SIZES, "MODEL.ROI_MASK_HEAD.CONV_DIM", "64")


@pytest.fixture(scope="session", autouse=True)
def synthetic_cache(tmp_path_factory):
    # One synthetic dataset for the whole session (generated once, ~5 s).
    path = os.environ.get("RESNET_BACKBONES_DATA") or str(tmp_path_factory.mktemp("rbdata"))
    os.environ["RESNET_BACKBONES_DATA"] = path
    return path


def tiny_cfg(out_dir, *extra):
    """The quick config shrunk to seconds per iteration: 64 px images, batch 2."""
    return load_config(QUICK, [
        "OUTPUT_DIR", str(out_dir), "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "4",
        "SOLVER.CHECKPOINT_PERIOD", "2", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64",
        "DATALOADER.NUM_WORKERS", "0", "MODEL.RESNET_BACKBONES.LOG_PERIOD", "1", "DATASETS.TEST", "()",
        *extra], use_detectron2=False)


def losses_by_iteration(out_dir):
    with open(os.path.join(out_dir, "metrics.json")) as f:
        rows = [json.loads(line) for line in f]
    return {r["iteration"]: r["total_loss"] for r in rows if "total_loss" in r}


def test_resume_after_interruption_continues_with_the_same_next_loss(tmp_path):
    straight = tmp_path / "straight"
    Trainer(tiny_cfg(straight)).train()
    reference = losses_by_iteration(straight)
    assert sorted(reference) == [1, 2, 3, 4]

    interrupted = tmp_path / "interrupted"
    trainer = Trainer(tiny_cfg(interrupted))
    step = trainer.run_step

    def stop_after_two(iteration, *args):  # a SIGINT arriving during iteration 2
        values = step(iteration, *args)
        if iteration == 1:
            signal.raise_signal(signal.SIGINT)  # caught by the CheckpointHook's handler
        return values

    trainer.run_step = stop_after_two
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert open(interrupted / "last_checkpoint").read() == "model_0000001.pth"
    resumed = Trainer(tiny_cfg(interrupted), resume=True)
    assert resumed.start_iter == 2
    resumed.train()
    after = losses_by_iteration(interrupted)
    assert after[3] == reference[3] and after[4] == reference[4]
    # Resumed with nothing left to train (a stop during the last iteration, or a lower MAX_ITER): the
    # final checkpoint is still written, as every command after training reads model_final.pth.
    os.remove(interrupted / "model_final.pth")
    (interrupted / "last_checkpoint").write_text("model_0000001.pth")  # the checkpoint before iteration 2
    done = Trainer(tiny_cfg(interrupted, "SOLVER.MAX_ITER", "2"), resume=True)
    assert done.start_iter == 2
    done.train()
    assert os.path.isfile(interrupted / "model_final.pth")
    assert set(os.listdir(straight)) >= {"model_final.pth", "model_0000001.pth", "last_checkpoint", "metrics.json"}
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(straight))


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    trainer = Trainer(tiny_cfg(tmp_path))
    heads = trainer.model.roi_heads
    real = heads.box_losses
    heads.box_losses = lambda *a: {k: v * float("nan") for k, v in real(*a).items()}
    with pytest.raises(FloatingPointError, match="iteration 0.*loss_cls"):
        trainer.train()


def test_num_classes_mismatch_is_named(tmp_path):
    with pytest.raises(ConfigError, match="NUM_CLASSES is 80 .* set MODEL.ROI_HEADS.NUM_CLASSES 3"):
        Trainer(tiny_cfg(tmp_path, "MODEL.ROI_HEADS.NUM_CLASSES", "80"))


def test_the_trainers_own_loader_flips_half_of_the_images(tmp_path):
    """INPUT.RANDOM_FLIP "horizontal" flips with probability 0.5 (detectron2's RandomFlip default), through
    the sampler the trainer itself builds; "none" never flips. 40000 draws: a rate of 0.52 lies 8 sd away."""
    import itertools
    import math

    trainer = Trainer(tiny_cfg(tmp_path))
    sampler = trainer._loader().batch_sampler
    flips = [f for batch in itertools.islice(iter(sampler), 20000) for _, f in batch]
    n = len(flips)
    assert n == 40000 and abs(sum(flips) - n / 2) <= 4 * math.sqrt(n / 4), sum(flips)
    never = Trainer(tiny_cfg(tmp_path / "none", "INPUT.RANDOM_FLIP", "none"))._loader().batch_sampler
    assert not any(f for batch in itertools.islice(iter(never), 500) for _, f in batch)


def test_two_process_ddp_on_gloo_stays_in_sync(tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    import ddp_helper

    from resnet_backbones.tv.distributed import launch

    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "4")
    launch(ddp_helper.train_and_report, 2, args=(cfg, str(tmp_path)))
    digests = [open(tmp_path / f"rank{r}.sha").read() for r in (0, 1)]
    assert digests[0] == digests[1]
    assert len(losses_by_iteration(tmp_path)) == 3


def run_tool(*args, env=None):
    start = time.perf_counter()
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, timeout=1200)
    print(f"{' '.join(args[:3])}: {time.perf_counter() - start:.0f} s")  # where a slow test spends its time
    return r


def test_cli_errors_are_clear(tmp_path):
    r = run_tool("tools/train_net.py", "--config", QUICK, "--engine", "torchvision", "MODEL.RESNETS.DEPHT", "18")
    assert r.returncode == 2 and "MODEL.RESNETS.DEPHT" in r.stderr
    r = run_tool("tools/train_net.py", "--config", "faster_rcnn_R50.yaml", "--engine", "torchvision",
                 "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path), "--eval-only",
                 env={"DETECTRON2_DATASETS": str(tmp_path)})
    assert r.returncode != 0 and "instances_val2017.json does not exist" in r.stderr
    if not torch.cuda.is_available():  # the COCO configs say MODEL.DEVICE cuda, as detectron2's
        r = run_tool("tools/train_net.py", "--config", "faster_rcnn_R50.yaml", "--engine", "torchvision",
                     "OUTPUT_DIR", str(tmp_path))
        assert r.returncode == 2 and "no CUDA device is available: add `MODEL.DEVICE cpu`" in r.stderr, r.stderr


@pytest.mark.slow
def test_ci_sized_training_learns_and_eval_only_and_demo_agree(tmp_path):
    """The main job as shipped (all 300 iterations; configs/quick_schedules/NOTES.md), then --eval-only and demo."""
    out = tmp_path / "run"
    r = run_tool("tools/train_net.py", "--config", QUICK, "--engine", "torchvision", "OUTPUT_DIR", str(out),
                 "SOLVER.CHECKPOINT_PERIOD", "1000")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Evaluation results for bbox" in r.stdout
    final = [json.loads(x) for x in open(out / "metrics.json")][-1]
    print("CI-sized run:", {k: round(v, 2) for k, v in final.items() if k.startswith("bbox/AP")})
    # The bound is the recipe's seed spread on this engine, mean - 3 sd: 58.2 +- 2.0 over three seeds
    # (configs/quick_schedules/NOTES.md, bf16, test size 88). Measured here with one thread (a pytest-xdist
    # worker): 59.9 in bf16 on the AVX-512 CPU; 62.7 in FP32 on the AVX2-only one at test size 96, which
    # scored no higher than 88 on any of nine models. Untrained: below 1.
    assert final["bbox/AP50"] >= MAIN_JOB_AP50_BOUND

    again = run_tool("tools/train_net.py", "--config", QUICK, "--engine", "torchvision", "--eval-only",
                     "OUTPUT_DIR", str(tmp_path / "eval"),
                     "MODEL.WEIGHTS", str(out / "model_final.pth"))
    assert again.returncode == 0, again.stderr[-3000:]
    row = [line for line in again.stdout.splitlines() if line.startswith("|") and ":" not in line][-1]
    # The same weights give the same AP50 up to floating-point noise of the CPU kernels (0.0002 seen).
    assert abs(float(row.split("|")[2]) - final["bbox/AP50"]) < 0.05

    images = [os.path.join(os.environ["RESNET_BACKBONES_DATA"], "synthetic_shapes_v1", "val", f"00000{i}.png")
              for i in (0, 1)]
    demo = run_tool("tools/demo.py", "--config", QUICK, "--input", *images, "--output", str(tmp_path / "demo"),
                    "MODEL.WEIGHTS", str(out / "model_final.pth"))
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "demo")) == ["000000.png", "000001.png"]

    # The trained model exported: the same COCO AP (within 0.1) and the same boxes. ONNX where onnxruntime is
    # installed (CI installs it), as in the Mask R-CNN test below: its kernels are not the eager ones, while
    # TorchScript runs the eager kernels and is checked bit for bit in tests/test_export.py.
    import importlib.util

    fmt = "onnx" if importlib.util.find_spec("onnxruntime") else "torchscript"
    diffs, (n_eager, n_exported, pairs, largest) = _export_and_compare(QUICK, out / "model_final.pth", fmt,
                                                                       tmp_path / fmt)
    assert all(abs(diffs["bbox"][m][1]) <= 0.1 for m in ("AP", "AP50", "AP75")), diffs
    assert n_exported == n_eager == pairs and largest <= 1e-3
    if fmt == "onnx":
        # int8 (onnxruntime's static quantization, calibrated on 64 training images): COCO AP within 0.5 of
        # the eager FP32 model's. Measured on the detectron2 engine's main-job model (AVX2-only EPYC): AP
        # +0.08, AP50 -0.6, AP75 -1.1 (AP50 and AP75 count single detections of a 1,400-detection val set).
        diffs, (n_eager, n_exported, pairs, _) = _export_and_compare(QUICK, out / "model_final.pth", "onnx-int8",
                                                                     tmp_path / "int8", "--calibrate", "64")
        assert abs(diffs["bbox"]["AP"][1]) <= 0.5, diffs
        assert pairs >= 0.9 * n_eager, (n_eager, n_exported, pairs)


def _export_and_compare(config, weights, fmt, folder, *extra):
    """tools/export_model.py --eval on the embedded val set: {task: {metric: exported - eager}} and the box
    agreement line's (eager count, exported count, pairs, largest difference in px)."""
    export = run_tool("tools/export_model.py", "--config", config, "--format", fmt, "--output", str(folder),
                      "--eval", "synthetic_shapes_val", *extra, "MODEL.WEIGHTS", str(weights))
    assert export.returncode == 0, export.stderr[-3000:]
    print(export.stdout)
    diffs = {}
    for line in export.stdout.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 7 and cells[1] in ("bbox", "segm"):
            diffs.setdefault(cells[1], {})[cells[2]] = (float(cells[3]), float(cells[5]))
    counts = export.stdout.split("detections: eager ")[1]
    n_eager, n_exported = int(counts.split(",")[0]), int(counts.split(f"{fmt} ")[1].split(";")[0])
    pairs = int(counts.split("; ")[1].split(" paired")[0])
    largest = float(counts.split("pair: ")[1].split(" px")[0])
    return diffs, (n_eager, n_exported, pairs, largest)


@pytest.mark.slow
def test_a_trained_mask_rcnn_exports_with_the_eager_segm_ap(tmp_path):
    """A short Mask R-CNN training (R18-FPN quick schedule cut to 100 iterations, at the main job's image
    sizes and widths: at the base's it trained at 2.7 s per iteration, most of 6.5 minutes), exported to ONNX,
    batched (2 images per graph): the exported bbox and segm APs equal the eager ones within 0.1 and
    the boxes agree, on a model whose masks have learned something (segm AP50 above 1). ONNX only, to keep
    CI short: TorchScript runs the eager kernels and gives the eager masks bit for bit
    (tests/test_export.py), and the main job's test above checks its AP."""
    config = "quick_schedules/mask_rcnn_R18_synthetic.yaml"
    out = tmp_path / "run"
    r = run_tool("tools/train_net.py", "--config", config, "--engine", "torchvision", "OUTPUT_DIR", str(out),
                 *SMALL_MASK_RCNN, "SOLVER.MAX_ITER", "100", "SOLVER.STEPS", "(80,)",
                 "SOLVER.CHECKPOINT_PERIOD", "1000", "DATASETS.TEST", "()")  # export_model evaluates it below
    assert r.returncode == 0, r.stderr[-3000:]
    pytest.importorskip("onnxruntime", reason="pip install 'resnet_backbones[export]' (CI installs it)")
    diffs, (n_eager, n_exported, pairs, largest) = _export_and_compare(
        config, out / "model_final.pth", "onnx", tmp_path / "onnx", "--batch-size", "2", *SMALL_MASK_RCNN)
    assert set(diffs) == {"bbox", "segm"}, diffs
    assert diffs["segm"]["AP50"][0] > 1.0, diffs  # the eager model's masks are not noise
    for task, metrics in diffs.items():  # an eager NaN: no object of that size in the val set
        assert all(abs(d) <= 0.1 for eager, d in metrics.values() if eager == eager), (task, metrics)
    assert n_exported == n_eager == pairs and largest <= 1e-3


@pytest.mark.slow
def test_ci_sized_training_on_a_coco_format_variant_with_80_coco_ids_learns(tmp_path):
    """The main job's recipe, at its own settings, on another small COCO-format dataset: COCO's 80 real
    category ids, JPEGs of 100-200 px, polygons, crowd regions, grey and empty images
    (``shapes_coco80_jpeg_polygon``; configs/quick_schedules/NOTES.md). With element-wise gradient clipping
    this recipe diverged here at iteration 65; now it must train healthily and learn. Its first 100
    iterations (warm-up, 30 at the full LR, then the step at 80), a third of the schedule to keep CI short:
    the divergence came in the first 100, and the main job's test above checks the whole schedule's AP."""
    out = tmp_path / "run"
    r = run_tool("tools/train_net.py", "--config", QUICK, "--engine", "torchvision", "OUTPUT_DIR", str(out),
                 "DATASETS.TRAIN", '("shapes_coco80_jpeg_polygon_train",)',
                 "DATASETS.TEST", '("shapes_coco80_jpeg_polygon_val",)', "MODEL.ROI_HEADS.NUM_CLASSES", "80",
                 "SOLVER.CHECKPOINT_PERIOD", "1000", "SOLVER.MAX_ITER", "100", "SOLVER.STEPS", "(80,)")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Training health: healthy" in r.stdout + r.stderr
    final = [json.loads(x) for x in open(out / "metrics.json")][-1]
    print("CI-sized run on the 80-id variant:", {k: round(v, 2) for k, v in final.items() if k.startswith("bbox/AP")})
    # One thread, FP32, AVX2-only EPYC: 6.8 after 100 iterations (LR step at 80), 20.1 after 150 (step at 120),
    # 55.6 after all 300. No seed spread was measured at 100, where AP climbs fast, so the bound is well below:
    # it fails a diverged run (AP 0) or one that learned nothing (untrained: < 1), not a seed.
    assert final["bbox/AP50"] >= 3.0
