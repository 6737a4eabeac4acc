"""tests/detections.py, the helper every test that compares two runs' detections uses: it pairs by content,
so the order of near-equal scores cannot fail a test, and it still fails on every real difference."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from detections import as_detections, assert_same_detections, pair_detections  # noqa: E402


def _dets(boxes, scores, labels, masks=None):
    d = {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores, dtype=torch.float32),
         "labels": torch.tensor(labels)}
    if masks is not None:
        d["masks"] = masks[:, None]
    return d


# The case CI met on an Intel Xeon with AMX (tests/test_export.py, ONNX C4 batch): two detections of one
# class whose scores differ by 1.2e-7 come out in the other order; paired by index, "boxes differ by 57 px".
EAGER = _dets([[10.0, 12.0, 40.0, 50.0], [67.19, 20.0, 95.0, 60.0], [5.0, 5.0, 30.0, 30.0]],
              [0.99996340, 0.99996328, 0.41], [2, 2, 1])
SWAPPED = _dets([[67.19, 20.0001, 95.0, 60.0], [10.0, 12.0, 40.0004, 50.0], [5.0, 5.0, 30.0, 30.0]],
                [0.99996334, 0.99996331, 0.41], [2, 2, 1])


def test_near_equal_scores_in_the_other_order_pair_by_content():
    by_index = (EAGER["boxes"] - SWAPPED["boxes"]).abs().max().item()
    assert by_index > 57  # what a positional comparison reported
    p = assert_same_detections(EAGER, SWAPPED, box_atol=1e-3, score_atol=1e-5)
    assert sorted(p.pairs) == [(0, 1), (1, 0), (2, 2)] and p.box_diff == pytest.approx(4e-4, abs=1e-5)
    # The pairing does not depend on either list's order.
    perm = torch.tensor([2, 0, 1])
    shuffled = {k: v[perm] for k, v in SWAPPED.items()}
    assert sorted((i, int(perm[j])) for i, j in pair_detections(EAGER, shuffled).pairs) == sorted(p.pairs)


@pytest.mark.parametrize("change, match", [
    (lambda d: d["boxes"].__setitem__((2, 0), 5.5), "boxes differ by 0.5"),
    (lambda d: d["scores"].__setitem__(2, 0.4101), "scores differ"),
    (lambda d: d["labels"].__setitem__(2, 3), "no counterpart"),
    (lambda d: d["boxes"].__setitem__(2, torch.tensor([50.0, 50.0, 60.0, 60.0])), "no counterpart"),
])
def test_every_real_difference_fails(change, match):
    other = {k: v.clone() for k, v in SWAPPED.items()}
    change(other)
    with pytest.raises(AssertionError, match=match):
        assert_same_detections(EAGER, other, box_atol=1e-3, score_atol=1e-5)


def test_a_missing_detection_fails_unless_it_sits_at_the_cut():
    fewer = {k: v[:2] for k, v in SWAPPED.items()}
    with pytest.raises(AssertionError, match="1 detection.*of a have no counterpart"):
        assert_same_detections(EAGER, fewer, box_atol=1e-3, score_atol=1e-5)
    # At the score threshold (0.41 kept by one run, dropped by the other): a coin toss, allowed.
    assert_same_detections(EAGER, fewer, box_atol=1e-3, score_atol=1e-5, score_floor=0.40999)
    # At the top-k cut: b is full (limit 2) and a's extra detection scores no more than b's lowest.
    tied = _dets([[1.0, 1, 9, 9], [20.0, 20, 29, 29], [40.0, 40, 49, 49]], [0.9, 0.5, 0.5], [1, 1, 1])
    cut = {k: v[[0, 2]] for k, v in tied.items()}
    assert_same_detections(tied, cut, box_atol=0, score_atol=1e-6, limit=2)
    with pytest.raises(AssertionError, match="no counterpart"):
        assert_same_detections(tied, cut, box_atol=0, score_atol=1e-6)  # no limit: a real loss
    with pytest.raises(AssertionError, match="fewer than the 5"):
        assert_same_detections(tied, tied, box_atol=0, score_atol=0, min_count=5)


def test_masks_are_compared_on_the_paired_detections():
    masks = torch.zeros(3, 64, 100, dtype=torch.bool)
    masks[0, 12:50, 10:40] = True
    masks[1, 20:60, 67:95] = True
    masks[2, 5:30, 5:30] = True
    a = dict(EAGER, masks=masks[:, None])
    b = dict(SWAPPED, masks=masks[[1, 0, 2]][:, None])  # each mask with its own detection
    assert_same_detections(a, b, box_atol=1e-3, score_atol=1e-5, mask_mismatch=0, mask_iou_min=1.0)
    crossed = dict(SWAPPED, masks=masks[:, None])  # masks left in place while the boxes swapped
    with pytest.raises(AssertionError, match="masks differ"):
        assert_same_detections(a, crossed, box_atol=1e-3, score_atol=1e-5, mask_mismatch=1e-3)
    with pytest.raises(AssertionError, match="mask IoU 0.0000"):
        assert_same_detections(a, crossed, box_atol=1e-3, score_atol=1e-5, mask_iou_min=0.99)


def test_every_accepted_form_reads_the_same():
    from resnet_backbones import Detections

    d = Detections(EAGER["boxes"], EAGER["scores"], EAGER["labels"] - 1, ["b", "b", "a"], None, (64, 100))
    coco = [{"image_id": 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s), "category_id": int(c)}
            for b, s, c in zip(EAGER["boxes"].tolist(), EAGER["scores"], EAGER["labels"] - 1)]
    for form in (d, coco):
        got, ref = as_detections(form), as_detections(EAGER)
        assert torch.allclose(got["boxes"], ref["boxes"], atol=1e-5) and torch.equal(got["classes"], ref["classes"])
        assert_same_detections(form, SWAPPED, box_atol=1e-3, score_atol=1e-5)
    with pytest.raises(TypeError, match="cannot read detections"):
        as_detections(3)
