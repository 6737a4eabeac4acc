"""The two engines' data paths draw training batches from the same distributions (needs detectron2).

No model: many batches from each engine's sampling pieces, on the embedded synthetic training split's
image sizes and on the quick schedules' INPUT keys: which images a batch holds (detectron2's
TrainingSampler + AspectRatioGroupedDataset, ours TrainingBatchSampler), the short sides
(detectron2's ResizeShortestEdge, ours Detectron2Transform), the horizontal flips (RandomFlip, ours the
sampler's flip draws). The random streams differ by design (numpy's global generator per worker there,
one torch generator per (seed, epoch) here), so the comparison is of distributions: exact where both are
exact (every image once per epoch, pure aspect groups), else within 4 standard errors of the common
expectation (the probability that a correct pair fails one of these checks is below 1e-4 each).
"""
import collections
import itertools
import math

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2")

from detectron2.data.common import AspectRatioGroupedDataset  # noqa: E402
from detectron2.data.samplers import TrainingSampler  # noqa: E402
from detectron2.data.transforms import RandomFlip, ResizeShortestEdge  # noqa: E402

from resnet_backbones.config import load_config  # noqa: E402
from resnet_backbones.data.dataset import TrainingBatchSampler  # noqa: E402
from resnet_backbones.data import COCOInstances, get_dataset  # noqa: E402
from resnet_backbones.tv.parity import Detectron2Transform  # noqa: E402

BATCH, EPOCHS, DRAWS = 8, 40, 20_000


@pytest.fixture(scope="module")
def dataset():
    """The synthetic training split as the torchvision engine reads it (its training images, in order)."""
    return COCOInstances(get_dataset("synthetic_shapes_train"))


@pytest.fixture(scope="module")
def sizes(dataset):
    """(width, height) of each of those images: what detectron2's dataset dicts carry."""
    return [(dataset.coco.imgs[i]["width"], dataset.coco.imgs[i]["height"]) for i in dataset.image_ids]


def _within(count, n, p, what):
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(count - n * p) <= 4 * sigma + 1e-9, f"{what}: {count} of {n}, expected {n * p:.1f} ± {4 * sigma:.1f}"


def _d2_batches(sizes, n_batches):
    items = ({"width": sizes[i][0], "height": sizes[i][1], "index": int(i)} for i in TrainingSampler(len(sizes), seed=0))
    return [[d["index"] for d in b] for b in itertools.islice(AspectRatioGroupedDataset(items, BATCH), n_batches)]


def _our_batches(dataset, n_batches):
    sampler = TrainingBatchSampler(dataset.aspect_ratio_is_wide(), BATCH, seed=0)
    batches = list(itertools.islice(iter(sampler), n_batches))
    return [[i for i, _ in b] for b in batches], [f for b in batches for _, f in b]


def test_every_image_once_per_epoch_and_pure_aspect_groups(dataset, sizes):
    n = len(sizes)
    wide = [w > h for w, h in sizes]  # detectron2's groups: square images (22 here) go with the tall ones
    assert sum(w == h for w, h in sizes) > 0
    n_batches = EPOCHS * n // BATCH - 2 * BATCH  # whole epochs, less what the two buckets may still hold
    ours, _ = _our_batches(dataset, n_batches)
    theirs = _d2_batches(sizes, n_batches)
    for name, batches in (("ours", ours), ("detectron2", theirs)):
        flat = [i for b in batches for i in b]
        assert all(len({wide[i] for i in b}) == 1 for b in batches), f"{name}: a batch mixes wide and tall images"
        # The index stream (before grouping) is a permutation per epoch in both; grouping delays an image
        # by at most one bucket's worth, so per image the count over EPOCHS epochs is EPOCHS or EPOCHS - 1.
        counts = collections.Counter(flat)
        assert set(counts) == set(range(n)), f"{name}: some images are never drawn"
        assert set(counts.values()) <= {EPOCHS - 1, EPOCHS}, f"{name}: visits per image {sorted(set(counts.values()))}"
        # Wide batches in proportion to wide images.
        p_wide = sum(wide) / n
        wide_batches = sum(wide[b[0]] for b in batches)
        assert abs(wide_batches / len(batches) - p_wide) <= 2 * BATCH / len(batches) + 0.01, name
    # Within an epoch each image appears once: the first epoch's n draws of ours are a permutation.
    first = [i for b in ours for i in b][: n - 2 * BATCH]
    assert len(set(first)) == len(first)


def test_flip_rate_is_one_half_in_both(dataset):
    _, our_flips = _our_batches(dataset, DRAWS // BATCH)
    _within(sum(our_flips), len(our_flips), 0.5, "ours: flips")
    flip = RandomFlip(prob=0.5, horizontal=True, vertical=False)
    np.random.seed(0)
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    theirs = [type(flip.get_transform(image)).__name__ == "HFlipTransform" for _ in range(len(our_flips))]
    _within(sum(theirs), len(theirs), 0.5, "detectron2: flips")


@pytest.mark.parametrize("name", ["quick_schedules/faster_rcnn_R18_synthetic.yaml", "faster_rcnn_R50.yaml"])
def test_short_sides_are_drawn_alike(name):
    """MIN_SIZE_TRAIN "choice": each value with probability 1/k in both engines (and "range": uniform)."""
    cfg = load_config(name, ["MODEL.DEVICE", "cpu"], use_detectron2=True)
    i = cfg.INPUT
    for sampling, values in (("choice", list(i.MIN_SIZE_TRAIN)), ("range", [min(i.MIN_SIZE_TRAIN), min(i.MIN_SIZE_TRAIN) + 7])):
        transform = Detectron2Transform(min_size_train=values, sampling=sampling, max_size_train=i.MAX_SIZE_TRAIN,
                                        min_size_test=i.MIN_SIZE_TEST, max_size_test=i.MAX_SIZE_TEST,
                                        pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD,
                                        size_divisibility=0).train()
        torch.manual_seed(0)
        ours = collections.Counter(transform._short_side() for _ in range(DRAWS))
        resize = ResizeShortestEdge(values, i.MAX_SIZE_TRAIN, sample_style=sampling)
        np.random.seed(0)
        square = np.zeros((100, 100, 3), dtype=np.uint8)  # no max-size cap: the new side is the drawn one
        theirs = collections.Counter(resize.get_transform(square).new_h for _ in range(DRAWS))
        support = values if sampling == "choice" else list(range(values[0], values[1] + 1))
        assert set(ours) == set(support) and set(theirs) <= set(support), (sampling, sorted(ours), sorted(theirs))
        for v in support:
            _within(ours[v], DRAWS, 1 / len(support), f"ours: short side {v} ({sampling})")
            _within(theirs[v], DRAWS, 1 / len(support), f"detectron2: short side {v} ({sampling})")
