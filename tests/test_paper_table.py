"""tools/paper_table.py: He et al. 2016, Table 8 from two run folders (config.yaml + metrics.json)."""
import json
import os
import subprocess
import sys

from resnet_backbones.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_run(folder, config, ap50, ap, *overrides):
    os.makedirs(folder)
    cfg = load_config(config, ["OUTPUT_DIR", str(folder), *overrides], use_detectron2=False)
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        f.write(json.dumps({"iteration": 20, "total_loss": 1.0}) + "\n")
        f.write(json.dumps({"iteration": 199, "bbox/AP": 1.0, "bbox/AP50": 2.0}) + "\n")  # an earlier evaluation
        f.write(json.dumps({"iteration": 399, "bbox/AP": ap, "bbox/AP50": ap50}) + "\n")
    return str(folder)


def paper_table(*args):
    return subprocess.run([sys.executable, "tools/paper_table.py", *args], cwd=ROOT, capture_output=True, text=True)


def test_prints_both_runs_beside_the_paper(tmp_path):
    vgg = fake_run(tmp_path / "vgg", "quick_schedules/faster_rcnn_VGG16_synthetic.yaml", 40.0, 20.0)
    c4 = fake_run(tmp_path / "c4", "quick_schedules/faster_rcnn_R50_C4_synthetic.yaml", 55.5, 30.25)
    r = paper_table(c4, vgg)  # either order
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "| VGG-16 (0.25 of its width) | 40.0 | 20.0 | VGG-16 | 41.5 | 21.2 |" in lines
    assert "| ResNet-50 C4 (0.25 of its width) | 55.5 | 30.2 | ResNet-101 | 48.4 | 27.2 |" in lines
    assert "| difference | +15.5 | +10.2 | | +6.9 | +6.0 |" in lines
    assert "| relative (mAP@[.5,.95]) | | +51 % | | | +28 % |" in lines
    assert "miniature" in r.stdout and "synthetic_shapes_val" in r.stdout
    assert "iteration 399" in r.stdout


def test_the_coco_configs_are_one_recipe(tmp_path):
    vgg = fake_run(tmp_path / "vgg", "faster_rcnn_VGG16.yaml", 41.0, 21.0)
    r101 = fake_run(tmp_path / "r101", "faster_rcnn_R101_C4.yaml", 48.0, 27.0)
    r = paper_table(vgg, r101)
    assert r.returncode == 0, r.stderr
    assert "| ResNet-101 C4 | 48.0 | 27.0 | ResNet-101 | 48.4 | 27.2 |" in r.stdout
    assert "miniature" not in r.stdout and "coco_2017_val" in r.stdout


def test_refuses_runs_of_different_recipes_naming_the_keys(tmp_path):
    vgg = fake_run(tmp_path / "vgg", "quick_schedules/faster_rcnn_VGG16_synthetic.yaml", 40.0, 20.0,
                   "SOLVER.MAX_ITER", "800")
    c4 = fake_run(tmp_path / "c4", "quick_schedules/faster_rcnn_R50_C4_synthetic.yaml", 55.0, 30.0)
    r = paper_table(vgg, c4)
    assert r.returncode == 2 and f"SOLVER.MAX_ITER: 800 ({vgg}) vs 400 ({c4})" in r.stderr
    assert "--allow-different-recipes" in r.stderr
    r = paper_table(vgg, c4, "--allow-different-recipes")
    assert r.returncode == 0 and "note: the recipes differ: SOLVER.MAX_ITER" in r.stdout


def test_bad_folders_are_errors(tmp_path):
    c4 = fake_run(tmp_path / "c4", "quick_schedules/faster_rcnn_R50_C4_synthetic.yaml", 55.0, 30.0)
    r = paper_table(c4, str(tmp_path / "missing"))
    assert r.returncode == 2 and "config.yaml not found" in r.stderr
    r = paper_table(c4, c4)
    assert r.returncode == 2 and "need at least one VGG run" in r.stderr
    vgg = fake_run(tmp_path / "vgg", "quick_schedules/faster_rcnn_VGG16_synthetic.yaml", 40.0, 20.0)
    with open(os.path.join(vgg, "metrics.json"), "w") as f:
        f.write(json.dumps({"iteration": 20, "total_loss": 1.0}) + "\n")
    r = paper_table(vgg, c4)
    assert r.returncode == 2 and "no bbox evaluation" in r.stderr


def test_several_seeds_give_the_mean_and_spread_and_one_side_is_one_backbone(tmp_path):
    """Table 8 in miniature from 3 seeds each: mean ± sample sd per backbone, the difference of the means; the
    seeds' SEED and OUTPUT_DIR differ without being a recipe difference, a second ResNet is refused."""
    vggs = [fake_run(tmp_path / f"vgg{s}", "quick_schedules/faster_rcnn_VGG16_synthetic.yaml", ap50, ap, "SEED", str(s))
            for s, (ap50, ap) in enumerate([(40.0, 20.0), (42.0, 21.0), (44.0, 22.0)])]
    c4s = [fake_run(tmp_path / f"c4{s}", "quick_schedules/faster_rcnn_R50_C4_synthetic.yaml", ap50, ap, "SEED", str(s))
           for s, (ap50, ap) in enumerate([(50.0, 28.0), (54.0, 30.0), (58.0, 32.0)])]
    r = paper_table(*c4s, *vggs)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "| VGG-16 (0.25 of its width), 3 runs | 42.0 ± 2.0 | 21.0 ± 1.0 | VGG-16 | 41.5 | 21.2 |" in lines
    assert "| ResNet-50 C4 (0.25 of its width), 3 runs | 54.0 ± 4.0 | 30.0 ± 2.0 | ResNet-101 | 48.4 | 27.2 |" in lines
    assert "| difference of the means | +12.0 | +9.0 | | +6.9 | +6.0 |" in lines
    assert "mean ± sample standard deviation" in r.stdout and r.stdout.count("SEED ") == 6
    r18 = fake_run(tmp_path / "r18", "quick_schedules/faster_rcnn_R18_synthetic.yaml", 60.0, 40.0)
    r = paper_table(*vggs, c4s[0], r18, "--allow-different-recipes")
    assert r.returncode == 2 and "different backbones" in r.stderr
