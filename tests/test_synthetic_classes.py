"""The embedded classification set (resnet_backbones/data/synthetic_classes.py), at a few images per class."""
import os

import numpy as np
import pytest
import torchvision

from resnet_backbones.data import DatasetError, ensure_classification_set
from resnet_backbones.data import synthetic_classes as sc

TINY = {"train": 3, "val": 1}


def _files(root):
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def test_generation_is_deterministic(tmp_path):
    a = ensure_classification_set(str(tmp_path / "a"), per_class=TINY)
    b = ensure_classification_set(str(tmp_path / "b"), per_class=TINY)
    fa, fb = _files(a), _files(b)
    assert len(fa) == 16 * (3 + 1) + 1 and fa == fb  # byte for byte, the manifest included
    first, label = sc.render_image(101, 5)
    assert np.array_equal(first, sc.render_image(101, 5)[0]) and label == 5
    assert not np.array_equal(first, sc.render_image(102, 5)[0])  # the splits' seeds draw other images


def test_image_folder_layout(tmp_path):
    root = ensure_classification_set(str(tmp_path / "set"), per_class=TINY)
    for split, n in TINY.items():
        ds = torchvision.datasets.ImageFolder(os.path.join(root, split))
        assert ds.classes == list(sc.CLASS_NAMES) and len(ds.classes) >= 10
        assert len(ds) == n * len(sc.CLASS_NAMES)
        for path, label in ds.samples:  # image i of a split is of class i % 16, named <class>/<i>.png
            assert int(os.path.basename(path)[:-4]) % len(sc.CLASS_NAMES) == label
        image, label = ds[0]
        assert image.size == (sc.IMAGE_SIZE, sc.IMAGE_SIZE) and image.mode == "RGB"
    assert sc.default_root().endswith(f"synthetic_classes_{sc.VERSION}")


def test_default_root_follows_the_data_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("RESNET_BACKBONES_DATA", str(tmp_path))
    assert sc.default_root() == os.path.join(str(tmp_path), f"synthetic_classes_{sc.VERSION}")


def _gradient_energy(image):
    g = image.astype(np.float64).mean(axis=2)
    return np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean()


def test_classes_differ_and_are_not_degenerate():
    k = len(sc.CLASS_NAMES)
    per_class = 12
    images = {name: [] for name in sc.CLASS_NAMES}
    for idx in range(per_class * k):
        image, label = sc.render_image(101, idx)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and image.std() > 5
        images[sc.CLASS_NAMES[label]].append(image)
    flat = np.stack([im.reshape(-1) for ims in images.values() for im in ims]).astype(np.int16)
    assert len({row.tobytes() for row in flat}) == len(flat)  # no two images alike
    means = {name: np.mean(ims, axis=0) for name, ims in images.items()}
    assert all(np.abs(means[a] - means[b]).mean() > 1.0 for a in sc.CLASS_NAMES for b in sc.CLASS_NAMES if a < b)
    # Texture is a class cue: stripes and checks put more edges into a square than a flat fill has.
    energy = {name: np.median([_gradient_energy(im) for im in ims]) for name, ims in images.items()}
    assert energy["checkered_square"] > 1.3 * energy["square"] and energy["striped_square"] > 1.3 * energy["square"]


def test_the_cache_is_written_once(tmp_path, monkeypatch):
    root = str(tmp_path / "cache" / "set")
    assert ensure_classification_set(root, per_class=TINY) == root
    assert sorted(os.listdir(os.path.dirname(root))) == ["set"]  # the temporary folder was renamed into place

    def boom(*args, **kwargs):
        raise AssertionError("regenerated")

    monkeypatch.setattr(sc, "generate_split", boom)
    assert ensure_classification_set(root, per_class=TINY) == root  # complete: reused, not regenerated
    with pytest.raises(DatasetError, match="another version or size.*delete it"):
        ensure_classification_set(root, per_class={"train": 4, "val": 1})
    # Interrupted generation leaves no partial folder behind, and the next call starts again.
    other = str(tmp_path / "cache" / "other")
    with pytest.raises(AssertionError, match="regenerated"):
        ensure_classification_set(other, per_class=TINY)
    assert sorted(os.listdir(os.path.dirname(root))) == ["set"]
