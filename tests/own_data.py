"""A user's own COCO-format folder, as detection users have one: ``train.json``, ``val.json`` and two
image folders, with category ids that are neither contiguous nor listed in order, and names of their own.
Shared by the own-data tests of both engines (a module, so that each test module can import it)."""
import json
import os
import shutil
import sys

from resnet_backbones.data.synthetic import generate_split

# The shapes' ids (1 circle, 2 square, 3 triangle) -> the user's ids and names.
USER_IDS = {1: 5, 2: 9, 3: 11}
USER_NAMES = {5: "disc", 9: "box", 11: "wedge"}
# The model's class order: sorted by category id, as detectron2's load_coco_json and the torchvision engine.
CLASS_NAMES = ["disc", "box", "wedge"]


def write_coco_folder(root: str, num_train: int = 16, num_val: int = 8) -> str:
    """``root/{train.json,val.json,train/,val/}``; returns ``root``."""
    for split, n, seed in (("train", num_train, 3), ("val", num_val, 4)):
        generated = os.path.join(root, "_generated")
        data = json.load(open(generate_split(generated, split, n, seed)))
        data["categories"] = [{"id": i, "name": USER_NAMES[i], "supercategory": "shape"} for i in (11, 5, 9)]
        for ann in data["annotations"]:
            ann["category_id"] = USER_IDS[ann["category_id"]]
        with open(os.path.join(root, f"{split}.json"), "w") as f:
            json.dump(data, f)
        shutil.move(os.path.join(generated, split), os.path.join(root, split))
        shutil.rmtree(generated)
    return root


def dataset_args(root: str):
    """The command line's ``--dataset`` options for the folder."""
    return ["--dataset", "my_train", os.path.join(root, "train.json"), os.path.join(root, "train"),
            "--dataset", "my_val", os.path.join(root, "val.json"), os.path.join(root, "val")]


# Seconds, not minutes: 64-px images, 2 per batch, a few iterations.
TINY = ["DATASETS.TRAIN", '("my_train",)', "DATASETS.TEST", '("my_val",)', "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "1000", "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "INPUT.MIN_SIZE_TEST", "64", "MODEL.RESNET_BACKBONES.LOG_PERIOD", "1"]


def bbox_ap_row(text: str):
    """The six numbers of the last "Evaluation results for bbox" table a run printed (both engines print
    detectron2's markdown table)."""
    lines = text.splitlines()
    start = max(i for i, line in enumerate(lines) if "Evaluation results for bbox" in line)
    row = next(line for line in lines[start + 1:] if line.startswith("|") and ":" not in line and "AP" not in line)
    return [float(c) for c in row.strip().strip("|").split("|")]


def assert_final_eval_is_the_saved_models(train_dir, train_text: str, eval_dir, eval_text: str, dataset: str):
    """The evaluation a (multi-process) training printed at its end is that of the model_final.pth it saved:
    the same detections on every image (by content, tests/detections.py) as a one-process ``--eval-only`` of
    that file, and the same AP table. Returns the number of detections compared."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from detections import assert_same_detections, coco_results_by_image

    def results(folder):
        with open(os.path.join(str(folder), "inference", dataset, "coco_instances_results.json")) as f:
            return coco_results_by_image(json.load(f))

    trained, evaluated = results(train_dir), results(eval_dir)
    assert sorted(trained) == sorted(evaluated), (sorted(trained), sorted(evaluated))
    for image_id in trained:
        # Scores within 1e-5: one process against two use other thread counts, so other summation orders.
        assert_same_detections(trained[image_id], evaluated[image_id], box_atol=1e-3, score_atol=1e-5, limit=100,
                               what=f"image {image_id}, final evaluation of the training vs --eval-only")
    a, b = bbox_ap_row(train_text), bbox_ap_row(eval_text)
    assert all(abs(x - y) <= 0.002 or (x != x and y != y) for x, y in zip(a, b)), (a, b)  # NaN: no such objects
    return sum(len(v) for v in trained.values())
