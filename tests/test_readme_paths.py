"""The README's user paths, run as the README writes them.

Each block after a ``<!-- path: NAME -->`` marker in README.md is read from the README at test time and
run, so that a command, an option, a key or a snippet that drifts from the code fails here. What a CPU
test cannot have is supplied around the commands, never by editing them:

- the network: detectron2's model-zoo checkpoint is put where the download would put it
  (``$RESNET_BACKBONES_CACHE``, under the URL's path), a randomly initialised detector of that config's
  architecture in the model zoo's own form (numpy arrays in detectron2's names);
- COCO and a GPU: overrides appended after the README's (``MODEL.DEVICE cpu``, a small dataset of the
  same 80 COCO category ids, small test images, a few iterations). yacs applies the later value, so the
  README's own keys are still parsed and checked;
- the working directory: your ``data/`` is a small COCO-format folder (tests/own_data.py).

Where a path's step cannot run here at all (training on COCO with 8 GPUs), the test says so.
"""
import os
import pickle
import shlex
import subprocess
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from own_data import CLASS_NAMES, write_coco_folder  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "quick_schedules/faster_rcnn_R18_synthetic.yaml"
ON_A_CPU = ["MODEL.DEVICE", "cpu"]
# Small test images and fewer proposals: a random R50-FPN otherwise sends 1000 proposals per image through
# its box head; the point here is the command, not the AP.
SMALL_TEST = ["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "192", "MODEL.RPN.POST_NMS_TOPK_TEST", "50"]
COCO80_VAL = ["DATASETS.TEST", '("shapes_coco80_jpeg_polygon_val",)']
TINY_TRAINING = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1",
                 "TEST.EVAL_PERIOD", "0", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64",
                 "DATALOADER.NUM_WORKERS", "0",
                 "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]  # a two-iteration model's detections, all kept


def readme_block(name: str) -> str:
    """The fenced block right after ``<!-- path: NAME -->`` in README.md."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    marker = f"<!-- path: {name} -->"
    assert text.count(marker) == 1, f"README.md holds {text.count(marker)} {marker!r} markers, not one"
    after = text.split(marker, 1)[1].lstrip("\n")
    assert after.startswith("```"), f"README.md: no fenced block right after {marker!r}"
    return after.split("\n", 1)[1].split("\n```", 1)[0]


def shell_commands(block: str):
    """A shell block's commands, as the shell splits them (continuations joined, comments dropped)."""
    return [argv for line in block.replace("\\\n", " ").splitlines() if (argv := shlex.split(line, comments=True))]


def run(argv, cwd, env=None):
    assert argv[0] == "python" and argv[1].startswith("tools/"), argv
    return subprocess.run([sys.executable, os.path.join(ROOT, argv[1]), *argv[2:]], cwd=cwd, capture_output=True,
                          text=True, timeout=900, env={**os.environ, **(env or {})})


def value_after(argv, key):
    return argv[argv.index(key) + 1]


def test_getting_started_runs_detectron2s_model_zoo_checkpoint(tmp_path):
    """The demo and the evaluation of detectron2's published R50-FPN checkpoint, by its ``detectron2://``
    name, on the torchvision engine (without detectron2: CI's first part) or detectron2's."""
    from resnet_backbones import model_zoo
    from resnet_backbones.config import load_config
    from resnet_backbones.tv.model import build_model
    from resnet_backbones.weights.detector import to_detectron2

    demo, train, evaluate = shell_commands(readme_block("getting-started"))
    assert demo[1] == "tools/demo.py" and "--eval-only" in evaluate and "--eval-only" not in train
    config = value_after(demo, "--config")
    url = value_after(demo, "MODEL.WEIGHTS")
    assert value_after(evaluate, "MODEL.WEIGHTS") == url == model_zoo.get_checkpoint_url(config)
    assert value_after(train, "--config") == value_after(evaluate, "--config") == config

    # The file the download would write: detectron2's model-zoo form of a detector of this architecture.
    cfg = load_config(config, [*ON_A_CPU, "MODEL.WEIGHTS", ""], use_detectron2=False)
    torch.manual_seed(0)
    state = to_detectron2(build_model(cfg).state_dict()).state
    cache = tmp_path / "cache"
    path = cache / url.replace("detectron2://", "dl.fbaipublicfiles.com/detectron2/")
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({"model": {k: v.numpy() for k, v in state.items()},
                                   "__author__": "Detectron2 Model Zoo"}))
    env = {"RESNET_BACKBONES_CACHE": str(cache)}

    from PIL import Image

    work = tmp_path / "work"
    work.mkdir()
    Image.new("RGB", (160, 120), (90, 140, 200)).save(work / value_after(demo, "--input"))
    r = run([*demo, *ON_A_CPU, *SMALL_TEST], cwd=work, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = work / value_after(demo, "--output")
    assert os.listdir(out) == [os.path.splitext(value_after(demo, "--input"))[0] + ".png"]  # as the README says

    # Training needs COCO and GPUs: the quick start and tests/test_train.py train; here the command is refused
    # for want of COCO, naming it, and not for an option or key it spells wrong.
    r = run([*train, *ON_A_CPU, "OUTPUT_DIR", str(tmp_path / "train")], cwd=work,
            env={**env, "DETECTRON2_DATASETS": str(tmp_path / "no_datasets")})
    assert r.returncode == 2 and "instances_train2017.json does not exist" in r.stderr, r.stderr[-3000:]

    r = run([*evaluate, *ON_A_CPU, *COCO80_VAL, *SMALL_TEST, "OUTPUT_DIR", str(tmp_path / "eval")], cwd=work, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Evaluation results for bbox" in r.stdout + r.stderr
    assert (tmp_path / "eval" / "inference" / "shapes_coco80_jpeg_polygon_val" / "coco_instances_results.json").is_file()


def test_own_data_trains_then_evaluates_the_saved_model_on_it(tmp_path):
    """The two own-data commands on a small COCO-format folder at ``data/``: the second evaluates the first's
    model_final.pth through its config.yaml. The README's config is swapped for the quick schedule (the same
    keys; the COCO config's ImageNet weights are a download) and its schedule cut to two iterations."""
    train, evaluate = shell_commands(readme_block("own-data"))
    assert value_after(train, "--config") == "faster_rcnn_R50.yaml"
    train[train.index("--config") + 1] = QUICK
    write_coco_folder(str(tmp_path / "data"))
    r = run([*train, *TINY_TRAINING], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = tmp_path / value_after(train, "OUTPUT_DIR")
    assert (run_dir / "model_final.pth").is_file() and (run_dir / "inference").is_dir()  # evaluated my_val

    assert value_after(evaluate, "--config") == os.path.join(value_after(train, "OUTPUT_DIR"), "config.yaml")
    r = run([*evaluate, "OUTPUT_DIR", str(tmp_path / "eval"), "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"],
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout + r.stderr
    assert "Evaluation results for bbox" in text
    assert all(name in text.split("Per-category bbox AP")[1] for name in CLASS_NAMES)


def test_the_export_folder_holds_what_the_readme_lists(tmp_path):
    from resnet_backbones.config import load_config
    from resnet_backbones.export import FORMATS, export_detector
    from resnet_backbones.tv.model import build_model

    lines = [line.split("#")[0].strip() for line in readme_block("export-folder").splitlines()]
    assert lines[0] == "export/"
    listed = set(filter(None, lines[1:]))
    assert FORMATS["onnx"] in listed
    cfg = load_config(QUICK, ["MODEL.WEIGHTS", ""], use_detectron2=False)
    export_detector(cfg, build_model(cfg), str(tmp_path / "export"), "torchscript")
    assert set(os.listdir(tmp_path / "export")) == listed - {FORMATS["onnx"]} | {FORMATS["torchscript"]}


def test_the_detectron2_project_snippet_trains_evaluates_and_reads_torchvision_weights(tmp_path, monkeypatch):
    """The snippet as written, on a small folder at ``data/``, with its config swapped for the quick schedule
    (R-18; the R-101 config's ImageNet weights are a download), a torchvision R-18 file as MODEL.WEIGHTS
    (which detectron2's own checkpointer cannot read) and two iterations: the checkpointer loaded that file
    into the body, and the evaluator ran on my_val."""
    pytest.importorskip("detectron2")
    import torchvision

    code = readme_block("detectron2-project")
    shipped = 'model_zoo.get_config("faster_rcnn_R101.yaml")'
    assert code.count(shipped) == 1 and code.count("register_datasets(cfg)") == 1
    code = code.replace(shipped, f'model_zoo.get_config("{QUICK}")')
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    # SOLVER.AMP off: the quick schedule's bf16 on a CPU is our Trainer's; DefaultTrainer's AMPTrainer needs
    # CUDA (the COCO configs train in FP32, as detectron2's).
    settings = (f"cfg.MODEL.WEIGHTS = {str(weights)!r}\n"
                f"cfg.merge_from_list({[*TINY_TRAINING, 'SOLVER.AMP.ENABLED', 'False']!r})\n")
    code = code.replace("register_datasets(cfg)", settings + "register_datasets(cfg)")
    before, train = code.split("trainer.train()")
    write_coco_folder(str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_snippet"}
    exec(compile(before, "README.md:detectron2-project", "exec"), namespace)
    trainer = namespace["trainer"]
    body = trainer.model.backbone.bottom_up
    assert torch.equal(body.stem.conv1.weight, torch.load(weights)["conv1.weight"])
    exec(compile("trainer.train()" + train, "README.md:detectron2-project", "exec"), namespace)
    assert trainer.iter == 2 and (tmp_path / "output" / "my_project" / "model_final.pth").is_file()
    results = trainer.test(trainer.cfg, trainer.model)
    assert "bbox" in results and "AP" in results["bbox"]
