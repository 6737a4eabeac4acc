"""A user's own COCO-format folder, as detection users have one: ``train.json``, ``val.json`` and two
image folders, with category ids that are neither contiguous nor listed in order, and names of their own.
Shared by the own-data tests of both engines (a module, so that each test module can import it)."""
import json
import os
import shutil

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
