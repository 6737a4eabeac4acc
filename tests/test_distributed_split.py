"""``--num-gpus N`` on the torchvision engine splits the work as detectron2 does: SOLVER.IMS_PER_BATCH is
the batch of all processes together (each of N processes takes IMS_PER_BATCH / N images per step, no
image in two processes' share of one step), and the evaluation runs each test image exactly once
(``InferenceSampler`` shards, the results gathered on rank 0).

The in-process tests call the engine's own loader and inference loop as rank r of a world of N (the
module's rank functions replaced), so they run in seconds; one short two-process run on gloo checks the
same in a real ``launch``: the images each rank trained on, and the gathered ``coco_instances_results.json``
against the saved weights run image by image in the test's own process."""
import importlib
import itertools
import json
import os
import sys
from types import SimpleNamespace

import pytest
import torch

from resnet_backbones.config import load_config
from resnet_backbones.data import COCOInstances, InferenceSampler, get_dataset

# The modules (``resnet_backbones.tv`` exports a function ``evaluate`` under the module's name).
tv_evaluate = importlib.import_module("resnet_backbones.tv.evaluate")
tv_train = importlib.import_module("resnet_backbones.tv.train")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from detections import assert_same_detections, coco_results_by_image  # noqa: E402
from own_data import TINY, write_coco_folder  # noqa: E402

QUICK = "quick_schedules/faster_rcnn_R18_synthetic.yaml"
NUM_TRAIN, NUM_VAL = 16, 5  # 5: the two evaluation shards differ in size (3 and 2 images)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_coco_folder(str(tmp_path_factory.mktemp("split_data")), num_train=NUM_TRAIN, num_val=NUM_VAL)


def _cfg(folder, out_dir, *extra):
    return load_config(QUICK, [*TINY, "OUTPUT_DIR", str(out_dir), "SOLVER.IMS_PER_BATCH", "4",
                               "DATALOADER.NUM_WORKERS", "0", *extra], use_detectron2=False,
                       datasets=[("my_train", os.path.join(folder, "train.json"), os.path.join(folder, "train")),
                                 ("my_val", os.path.join(folder, "val.json"), os.path.join(folder, "val"))])


def _rank_batches(monkeypatch, cfg, dataset, rank, world, steps):
    """The first ``steps`` batches (lists of dataset indices) of the trainer's own loader, as rank ``rank`` of
    ``world`` processes builds it (``Trainer._loader``: the sampler and the per-process batch size)."""
    monkeypatch.setattr(tv_train, "get_rank", lambda: rank)
    monkeypatch.setattr(tv_train, "get_world_size", lambda: world)
    trainer = SimpleNamespace(cfg=cfg, dataset=dataset, seed=cfg.SEED, start_iter=0)
    sampler = tv_train.Trainer._loader(trainer).batch_sampler
    return [[index for index, _ in batch] for batch in itertools.islice(iter(sampler), steps)]


@pytest.mark.parametrize("grouping", [False, True])
def test_each_process_takes_its_half_of_the_batch_and_images_of_its_own(folder, tmp_path, monkeypatch, grouping):
    """Rank 0 and rank 1 of ``--num-gpus 2`` with SOLVER.IMS_PER_BATCH 4 each take 2 images per step, never
    an image the other takes in that step; without aspect-ratio grouping their first 4 steps (16 images)
    are the 16 training images, each once (detectron2's TrainingSampler: one shuffle shared by the ranks,
    rank r takes every world_size-th index). Fails if each process took IMS_PER_BATCH images, or both the
    same ones (rank ignored, or a seed per rank)."""
    cfg = _cfg(folder, tmp_path, "DATALOADER.ASPECT_RATIO_GROUPING", str(grouping))
    dataset = COCOInstances(get_dataset("my_train", cfg))
    assert len(dataset) == NUM_TRAIN
    # With grouping, each rank's 8 images of the first epoch fill at least 3 batches of 2 before the
    # wide and the tall bucket can carry one image each into the next epoch.
    steps = NUM_TRAIN // 4 if not grouping else 3
    batches = [_rank_batches(monkeypatch, cfg, dataset, rank, 2, steps) for rank in (0, 1)]
    for step in range(steps):
        a, b = batches[0][step], batches[1][step]
        assert len(a) == len(b) == 2, f"step {step}: rank 0 took {len(a)} images, rank 1 {len(b)}; IMS_PER_BATCH " \
                                      "4 over 2 processes is 2 each"
        assert not set(a) & set(b), f"step {step}: both processes took images {sorted(set(a) & set(b))}"
    if not grouping:
        seen = sorted(i for rank in batches for batch in rank for i in batch)
        assert seen == list(range(NUM_TRAIN)), f"the first epoch of both processes: {seen}"
    # One process alone takes the whole batch.
    alone = _rank_batches(monkeypatch, cfg, dataset, 0, 1, steps)
    assert all(len(batch) == 4 for batch in alone)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_inference_shards_cover_every_image_once(world):
    """``InferenceSampler``: the shards of ``world`` ranks together hold each index once, sizes within one."""
    for size in range(0, 11):
        shards = [list(InferenceSampler(size, rank, world)) for rank in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(size)), (size, world, shards)
        assert max(map(len, shards)) - min(map(len, shards)) <= 1, (size, world, shards)
        assert [len(InferenceSampler(size, rank, world)) for rank in range(world)] == list(map(len, shards))


class _OneBoxPerImage(torch.nn.Module):
    """A stand-in detector: one detection per image, so the results name the images that were run."""

    def forward(self, images):
        return [{"boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([1])} for _ in images]


def test_the_gathered_evaluation_holds_each_image_once(folder, tmp_path, monkeypatch):
    """The evaluation loop (``inference_on_dataset``) as rank 1 and then rank 0 of 2 processes, the gather
    answering as ``all_gather`` does (each rank's list, by rank): rank 0 returns one result per test image,
    each image once, none from rank 1 lost; rank 1 returns nothing (rank 0 evaluates)."""
    cfg = _cfg(folder, tmp_path)
    dataset = COCOInstances(get_dataset("my_val", cfg))
    assert len(dataset) == NUM_VAL
    lists = {}

    def run_as(rank):
        def gather(obj):
            lists[rank] = obj
            return [lists.get(r) for r in range(2)]
        monkeypatch.setattr(tv_evaluate, "get_rank", lambda: rank)
        monkeypatch.setattr(tv_evaluate, "get_world_size", lambda: 2)
        monkeypatch.setattr(tv_evaluate, "is_main_process", lambda: rank == 0)
        monkeypatch.setattr(tv_evaluate, "all_gather", gather)
        return tv_evaluate.inference_on_dataset(_OneBoxPerImage(), dataset, torch.device("cpu"))

    assert run_as(1) == []
    results = run_as(0)
    shards = [sorted(r["image_id"] for r in lists[rank]) for rank in (0, 1)]
    assert not set(shards[0]) & set(shards[1]), f"both ranks evaluated {set(shards[0]) & set(shards[1])}"
    assert sorted(r["image_id"] for r in results) == sorted(dataset.image_ids), \
        f"rank 0 gathered {sorted(r['image_id'] for r in results)}, the test set is {sorted(dataset.image_ids)}"


def train_two_processes(cfg, out_dir):
    """Run in each process of the two-process test (spawned: this module is importable by name)."""
    from resnet_backbones.tv.distributed import get_rank
    from resnet_backbones.tv.train import Trainer, setup_logging

    setup_logging(cfg.OUTPUT_DIR)
    trainer = Trainer(cfg)
    seen = []
    step = trainer.run_step

    def run_step(iteration, images, targets):
        seen.append([int(t["image_id"]) for t in targets])
        return step(iteration, images, targets)

    trainer.run_step = run_step
    trainer.train()  # then the evaluation of DATASETS.TEST, gathered on rank 0
    with open(os.path.join(out_dir, f"rank{get_rank()}.json"), "w") as f:
        json.dump(seen, f)


def test_two_processes_split_the_batch_and_evaluate_each_image_once(folder, tmp_path):
    """A real two-process launch on gloo (3 iterations, SOLVER.IMS_PER_BATCH 4, score threshold 0 so that
    every image has detections): each rank trained on 2 images per step and not on the other's; the
    gathered coco_instances_results.json holds each test image's detections once: those of the saved
    weights run here on that image alone, outside the evaluation loop (paired by content, tests/detections.py)."""
    from resnet_backbones.tv.distributed import launch
    from resnet_backbones.tv.model import build_model

    out = tmp_path / "run"
    cfg = _cfg(folder, out, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
    launch(train_two_processes, 2, args=(cfg, str(tmp_path)))
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == cfg.SOLVER.MAX_ITER
    for step, (a, b) in enumerate(zip(*ranks)):
        assert len(a) == len(b) == 2, f"step {step}: rank 0 trained on {a}, rank 1 on {b}; 4 images over 2 processes"
        assert not set(a) & set(b), f"step {step}: both processes trained on images {sorted(set(a) & set(b))}"

    gathered = json.load(open(out / "inference" / "my_val" / "coco_instances_results.json"))
    dataset = COCOInstances(get_dataset("my_val", cfg))
    model = build_model(cfg)
    model.load_state_dict(torch.load(out / "model_final.pth", weights_only=True)["model"])
    model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # as each rank ran (launch shares the cores)
    try:  # the model on each test image, in this process, without the evaluation loop under test
        with torch.no_grad():
            alone = {image_id: model([dataset[i][0]])[0] for i, image_id in enumerate(dataset.image_ids)}
    finally:
        torch.set_num_threads(threads)
    by_image = coco_results_by_image(gathered)
    assert sorted(by_image) == sorted(dataset.image_ids), f"detections for images {sorted(by_image)}"
    category_ids = torch.tensor(dataset.category_ids)
    for image_id, output in alone.items():
        ref = {"boxes": output["boxes"].double(), "scores": output["scores"].double(),
               "classes": category_ids[output["labels"] - 1], "masks": None}  # as the json names classes
        gathered_count, model_count = len(by_image[image_id]), len(ref["scores"])
        assert gathered_count == model_count, \
            f"image {image_id}: {gathered_count} detections gathered, the model gives {model_count}"
        assert_same_detections(by_image[image_id], ref, box_atol=1e-2, score_atol=1e-4,
                               limit=cfg.TEST.DETECTIONS_PER_IMAGE, min_count=1, what=f"image {image_id}")


def test_results_leave_the_models_output_as_it_was():
    """The COCO results of one image are made from a copy: the model's XYXY boxes stay XYXY (a CPU float32
    tensor's ``numpy()`` shares its memory, and the XYWH conversion once rewrote the caller's boxes)."""
    from resnet_backbones.tv.evaluate import _to_coco

    out = {"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    assert _to_coco(out, 7, [5]) == [{"image_id": 7, "category_id": 5, "bbox": [10.0, 20.0, 20.0, 40.0],
                                      "score": pytest.approx(0.9)}]
    assert out["boxes"].tolist() == [[10.0, 20.0, 30.0, 60.0]]
