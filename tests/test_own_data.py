"""Your own COCO-format data without Python (torchvision engine): ``--dataset NAME JSON IMAGE_ROOT`` on
the command line and MODEL.RESNET_BACKBONES.DATASETS in a yaml, in training, --eval-only, under
``--num-gpus 2``, in tools/check_dataset.py and tools/demo.py; NUM_CLASSES checked against the json.
The detectron2 engine's counterpart is tests/test_own_data_detectron2.py."""
import os
import subprocess
import sys

import pytest
import yaml

from resnet_backbones.config import ConfigError, load_config
from resnet_backbones.data import get_dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from own_data import (CLASS_NAMES, TINY, assert_final_eval_is_the_saved_models, dataset_args,  # noqa: E402
                      write_coco_folder)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "quick_schedules/faster_rcnn_R18_synthetic.yaml"
# Every detection kept, so that a three-iteration model's evaluation compares hundreds of them.
EVERY_DETECTION = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_coco_folder(str(tmp_path_factory.mktemp("my_data")))


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def per_category_rows(text: str, iou_type: str = "bbox"):
    """The category names of the first per-category AP table a run printed (both engines print
    detectron2's layout: "Per-category bbox AP:" then rows of (category, AP) pairs)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if f"Per-category {iou_type} AP" in line) + 1
    names = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] != "category" and not cells[0].startswith(":"):
            names += [c for c in cells[0::2] if c]
    return names


def test_own_folder_trains_evaluates_and_demos_from_the_command_line_in_two_processes(folder, tmp_path):
    out = tmp_path / "train"
    r = run("tools/train_net.py", "--config", QUICK, "--engine", "torchvision", "--num-gpus", "2",
            *dataset_args(folder), *TINY, *EVERY_DETECTION, "OUTPUT_DIR", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout + r.stderr
    assert "Evaluating my_val: 8 images" in text and "Per-category bbox AP:" in text
    assert per_category_rows(text) == CLASS_NAMES  # the json's names, in category-id order
    # Both processes resolved the datasets from the config they were given (DDP: 1 image each).
    rank1 = (out / "log.txt.rank1").read_text()
    assert "Overall training time" in rank1 and "Evaluating my_val: 8 images" in rank1
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["MODEL"]["RESNET_BACKBONES"]["DATASETS"] == [
        ["my_train", os.path.join(folder, "train.json"), os.path.join(folder, "train")],
        ["my_val", os.path.join(folder, "val.json"), os.path.join(folder, "val")]]

    # The same datasets from a yaml: the run's own config.yaml, from another folder.
    again = run(os.path.join(ROOT, "tools/train_net.py"), "--config", str(out / "config.yaml"), "--engine",
                "torchvision", "--eval-only", "MODEL.WEIGHTS", str(out / "model_final.pth"),
                "OUTPUT_DIR", str(tmp_path / "eval"), cwd=str(tmp_path))
    assert again.returncode == 0, again.stderr[-3000:]
    assert per_category_rows(again.stdout + again.stderr) == CLASS_NAMES
    # The AP printed at the end of the two-process training is its model_final.pth's (trainable BN: each
    # process's running statistics followed its own images until the evaluation took process 0's).
    n = assert_final_eval_is_the_saved_models(out, text, tmp_path / "eval", again.stdout + again.stderr, "my_val")
    assert n >= 100, n

    demo = run("tools/demo.py", "--config", QUICK, *dataset_args(folder), "DATASETS.TRAIN", '("my_train",)',
               "MODEL.WEIGHTS", str(out / "model_final.pth"), "INPUT.MIN_SIZE_TEST", "64",
               "--confidence-threshold", "0", "--input", os.path.join(folder, "val", "000000.png"),
               "--output", str(tmp_path / "demo"))
    assert demo.returncode == 0, demo.stderr[-3000:]
    labels = [d.rsplit(" ", 1)[0] for d in demo.stdout.split("(", 1)[1].rsplit(")", 1)[0].split(", ") if d != "..."]
    assert labels and set(labels) <= set(CLASS_NAMES), demo.stdout  # names, not class numbers
    assert os.listdir(tmp_path / "demo") == ["000000.png"]


def test_a_yaml_of_your_own_names_its_data_and_a_shipped_base(folder, tmp_path, monkeypatch):
    """MODEL.RESNET_BACKBONES.DATASETS in a yaml anywhere, ``_BASE_`` a shipped config's short name;
    relative paths are the working directory's, stored absolute."""
    (tmp_path / "mine.yaml").write_text(
        "_BASE_: quick_schedules/faster_rcnn_R18_synthetic.yaml\n"
        "MODEL:\n  RESNET_BACKBONES:\n"
        "    DATASETS: [[my_train, data/train.json, data/train], [my_val, data/val.json, data/val]]\n"
        "DATASETS:\n  TRAIN: ('my_train',)\n  TEST: ('my_val',)\n")
    os.symlink(folder, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(tmp_path / "mine.yaml"), use_detectron2=False)
    shipped = load_config(QUICK, use_detectron2=False)
    assert cfg.SOLVER.MAX_ITER == shipped.SOLVER.MAX_ITER
    assert cfg.MODEL.FPN.OUT_CHANNELS == shipped.MODEL.FPN.OUT_CHANNELS
    spec = get_dataset("my_val", cfg)
    assert spec.json_file == str(tmp_path / "data" / "val.json") and spec.image_root == str(tmp_path / "data" / "val")
    # The command line adds to the yaml's list.
    more = load_config(str(tmp_path / "mine.yaml"), use_detectron2=False,
                       datasets=[("extra", str(tmp_path / "data" / "val.json"), str(tmp_path / "data" / "val"))])
    assert [d[0] for d in more.MODEL.RESNET_BACKBONES.DATASETS] == ["my_train", "my_val", "extra"]


def test_num_classes_must_match_the_json(folder, tmp_path):
    r = run("tools/train_net.py", "--config", QUICK, "--engine", "torchvision", *dataset_args(folder), *TINY,
            "MODEL.ROI_HEADS.NUM_CLASSES", "80", "OUTPUT_DIR", str(tmp_path))
    assert r.returncode == 2, r.stderr[-3000:]
    error = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "NUM_CLASSES is 80" in error[0] and "has 3 categories" in error[0] \
        and "set MODEL.ROI_HEADS.NUM_CLASSES 3" in error[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    # The test set is checked too (--eval-only resolves only DATASETS.TEST).
    cfg = load_config(QUICK, ["MODEL.ROI_HEADS.NUM_CLASSES", "2"], use_detectron2=False,
                      datasets=[("my_val", os.path.join(folder, "val.json"), os.path.join(folder, "val"))])
    with pytest.raises(ConfigError, match="NUM_CLASSES is 2 but dataset 'my_val'.*has 3 categories"):
        get_dataset("my_val", cfg)


@pytest.mark.parametrize("entry, match", [
    (("coco_2017_val", "a.json", "a"), "built-in dataset name"),
    (("my_train", "a.json", ""), r"\[NAME, JSON_FILE, IMAGE_ROOT\]"),
])
def test_bad_dataset_entries_are_refused(entry, match):
    with pytest.raises(ConfigError, match=match):
        load_config(QUICK, use_detectron2=False, datasets=[entry])
    with pytest.raises(ConfigError, match="given twice with different files"):
        load_config(QUICK, use_detectron2=False, datasets=[("a", "x.json", "x"), ("a", "y.json", "y")])
    with pytest.raises(ConfigError, match=r"\[NAME, JSON_FILE, IMAGE_ROOT\]"):
        load_config(QUICK, ["MODEL.RESNET_BACKBONES.DATASETS", "[['a', 'x.json']]"], use_detectron2=False)


def test_an_unknown_name_says_how_to_give_its_files(tmp_path):
    r = run("tools/train_net.py", "--config", QUICK, "--engine", "torchvision", "DATASETS.TRAIN", '("my_train",)',
            "OUTPUT_DIR", str(tmp_path))
    assert r.returncode == 2 and "--dataset my_train JSON_FILE IMAGE_ROOT" in r.stderr, r.stderr[-2000:]


def test_check_dataset_takes_the_same_option(folder, tmp_path):
    r = run("tools/check_dataset.py", *dataset_args(folder))
    assert r.returncode == 0 and "my_train: OK" in r.stdout and "my_val: OK" in r.stdout, r.stderr[-2000:]
    broken = tmp_path / "val"
    os.symlink(os.path.join(folder, "val.json"), tmp_path / "val.json")
    broken.mkdir()
    for name in os.listdir(os.path.join(folder, "val")):
        (broken / name).write_bytes(open(os.path.join(folder, "val", name), "rb").read())
    (broken / "000003.png").write_bytes(b"\x89PNG truncated")
    r = run("tools/check_dataset.py", "--dataset", "mine", str(tmp_path / "val.json"), str(broken))
    assert r.returncode == 2 and "000003.png" in r.stderr and "mine: 1 image(s) cannot be used" in r.stdout
