"""TEST.EXPECTED_RESULTS on the torchvision engine (detectron2's verify_results) and its exit status."""
import math

import pytest

from resnet_backbones.config import load_config
from resnet_backbones.errors import ResultsVerificationError
from resnet_backbones.tv.verify import verify_results

QUICK = "quick_schedules/faster_rcnn_R18_synthetic.yaml"
RESULTS = {"bbox": {"AP": 40.0, "AP50": 60.0, "APs": math.nan}, "segm": {"AP": 35.0}}


def cfg_expecting(expected):
    return load_config(QUICK, ["TEST.EXPECTED_RESULTS", repr(expected)], use_detectron2=False)


def test_results_within_tolerance_pass():
    verify_results(cfg_expecting([]), {})  # nothing expected: nothing to check
    verify_results(cfg_expecting([["bbox", "AP", 40.4, 0.5], ["segm", "AP", 35.0, 0.0]]), RESULTS)


@pytest.mark.parametrize("entry,message", [
    (["bbox", "AP", 41.0, 0.5], r"bbox/AP = 40.0000, expected 41.0 ± 0.5"),
    (["bbox", "APs", 0.0, 100.0], r"bbox/APs = nan"),           # non-finite never passes
    (["bbox", "APx", 0.0, 1.0], r"bbox/APx: no such result"),
    (["keypoints", "AP", 0.0, 1.0], r"keypoints/AP: no such result .*'bbox', 'segm'"),
])
def test_a_mismatch_raises_naming_the_entry(entry, message):
    with pytest.raises(ResultsVerificationError, match=message):
        verify_results(cfg_expecting([["segm", "AP", 35.0, 0.1], entry]), RESULTS)


def test_train_net_exits_1_with_the_message(monkeypatch, capsys):
    import resnet_backbones.tv
    from resnet_backbones import train_net  # what tools/train_net.py and the console command run

    def fail(*args, **kwargs):
        raise ResultsVerificationError("TEST.EXPECTED_RESULTS not met:\n  bbox/AP = 1.0, expected 40 ± 1")

    monkeypatch.setattr(resnet_backbones.tv, "launch", fail)
    assert train_net.main(["--config", QUICK, "--engine", "torchvision"]) == 1
    assert "error: TEST.EXPECTED_RESULTS not met" in capsys.readouterr().err
