"""tools/degradation_check.py: its curves, table and PNG from the four runs' metrics.json (the runs
themselves are tools/pretrain_net.py, tested in test_pretrain.py; here they are written by the test)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "degradation_check.py")


def _tool():
    spec = importlib.util.spec_from_file_location("degradation_check", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_run(folder, iters, train_end, val_end, final=True):
    """A pretraining run's metrics.json as the trainer writes it: progress lines every 20 iterations with
    the window's training error, an evaluation every iters/6 (the last one only when ``final``)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        for it in range(20, iters + 1, 20):
            frac = it / iters
            f.write(json.dumps({"iteration": it, "loss_cls": 2.0, "total_loss": 2.0, "lr": 0.01,
                                "top1_error_train": 93.75 + (train_end - 93.75) * frac}) + "\n")
            if it % (iters // 6) == 0 and (final or it < iters):
                f.write(json.dumps({"iteration": it, "classification/top1_error": 93.75 + (val_end - 93.75) * frac,
                                    "classification/top1": 0.0}) + "\n")


def test_finished_runs_are_reused_and_drawn_with_their_final_errors(tmp_path):
    pytest.importorskip("matplotlib", reason="pip install 'resnet_backbones[test]' (CI installs it)")
    ends = {"plain-18": (40.0, 45.0), "plain-34": (50.0, 55.0), "ResNet-18": (38.0, 44.0), "ResNet-34": (30.0, 36.0)}
    for name, (train_end, val_end) in ends.items():
        _write_run(tmp_path / name, 120, train_end, val_end)
    r = subprocess.run([sys.executable, TOOL, "--iters", "120", "--output", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("reusing the finished run") == 4  # nothing was trained again
    with open(tmp_path / "degradation.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    rows = {row["net"]: row for row in json.load(open(tmp_path / "degradation.json"))["rows"]}
    assert set(rows) == set(ends)
    for name, (train_end, val_end) in ends.items():
        assert rows[name]["train_top1_error"] == pytest.approx(train_end)
        assert rows[name]["val_top1_error"] == pytest.approx(val_end)
    table = open(tmp_path / "degradation.md").read()
    assert "| plain-34 | 50.0 | 55.0 | 55.0 | 28.54 | reused |" in table
    assert "| ResNet-34 | 30.0 | 36.0 | 36.0 | 25.03 | reused |" in table


def test_a_run_without_its_final_evaluation_is_not_finished(tmp_path):
    tool = _tool()
    _write_run(tmp_path / "done", 120, 30.0, 35.0)
    _write_run(tmp_path / "stopped", 120, 30.0, 35.0, final=False)
    assert tool.finished(str(tmp_path / "done"), 120)
    assert not tool.finished(str(tmp_path / "stopped"), 120)
    assert not tool.finished(str(tmp_path / "done"), 240)  # another budget: trained again
    assert not tool.finished(str(tmp_path / "missing"), 120)
    train, val = tool.read_curves(str(tmp_path / "done" / "metrics.json"))
    assert [i for i, _ in train] == list(range(20, 121, 20)) and [i for i, _ in val] == list(range(20, 121, 20))
