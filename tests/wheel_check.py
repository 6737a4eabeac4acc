"""Check an installed resnet_backbones wheel from outside the checkout (.ci/run runs this in a fresh venv).

    python wheel_check.py --checkout /path/to/clone [--require-detectron2]

Fails unless: the package is imported from site-packages (not the checkout); every shipped config is
found by its short name; every yaml config builds its model (torchvision engine, and the detectron2 engine
when detectron2 is installed; on the meta device: every constructor runs, no weights are filled); every
LazyConfig instantiates and runs a CPU forward (detectron2 only); and the console command trains ``--config faster_rcnn_R101.yaml`` for two
iterations on the synthetic dataset (on each engine there is; with ``--require-detectron2``, which .ci/run
gives after a first run without detectron2, on detectron2's only). Not a pytest module: it tests the
install, so it must not run from the tests folder of a checkout.
"""
import argparse
import os
import subprocess
import sys
import sysconfig
import tempfile
import time

import torch


def step(msg: str) -> None:
    print(f"wheel check: {msg}", flush=True)


def check_location(checkout: str) -> None:
    import resnet_backbones

    where = os.path.realpath(resnet_backbones.__file__)
    if where.startswith(os.path.realpath(checkout) + os.sep):
        sys.exit(f"wheel check: resnet_backbones was imported from the checkout ({where}), not the wheel")
    if not where.startswith(os.path.realpath(sysconfig.get_paths()["purelib"])):
        sys.exit(f"wheel check: resnet_backbones imported from {where}, outside this venv's site-packages")
    step(f"resnet_backbones {resnet_backbones.__version__} from {os.path.dirname(where)}")


def check_configs_shipped(checkout: str, names) -> None:
    """The wheel carries every config of the checkout's top-level configs/ inside the package."""
    from resnet_backbones.config import CONFIGS_DIR

    where = os.path.realpath(CONFIGS_DIR)
    if not where.startswith(os.path.realpath(sysconfig.get_paths()["purelib"])):
        sys.exit(f"wheel check: the configs were read from {where}, not from the wheel in site-packages")
    src = os.path.join(checkout, "configs")
    expected = sorted(os.path.relpath(os.path.join(r, f), src).replace(os.sep, "/")
                      for r, _, files in os.walk(src) if "__pycache__" not in r
                      for f in files if f.endswith((".yaml", ".py")))
    if list(names) != expected:
        sys.exit(f"wheel check: the wheel's configs differ from {src}: missing "
                 f"{sorted(set(expected) - set(names))}, extra {sorted(set(names) - set(expected))}")
    step(f"the wheel carries all {len(expected)} configs of configs/, in {where}")


def check_yaml(names, with_detectron2: bool) -> None:
    from resnet_backbones import model_zoo
    from resnet_backbones.config import load_config
    from resnet_backbones.tv.model import build_model
    from resnet_backbones.tv.supported import check_supported

    for name in names:
        if os.path.basename(name).startswith("Base-"):
            continue
        model_zoo.get_config_file(name)
        cfg = load_config(name, ["MODEL.DEVICE", "meta"], use_detectron2=False)
        check_supported(cfg)
        with torch.device("meta"):  # every constructor runs; no memory is filled (6 s -> 0.7 s for R152-DC5)
            model = build_model(cfg)
        n = sum(p.numel() for p in model.parameters())
        line = f"{name}: torchvision engine {n / 1e6:.1f} M parameters"
        if with_detectron2:
            from detectron2.modeling import build_model as d2_build_model

            d2cfg = load_config(name, ["MODEL.DEVICE", "meta"], use_detectron2=True)
            with torch.device("meta"):
                d2_model = d2_build_model(d2cfg)
            ours = {k: tuple(v.shape) for k, v in model.backbone.state_dict().items()}
            theirs = {k: tuple(v.shape) for k, v in d2_model.backbone.state_dict().items()}
            if ours != theirs:
                sys.exit(f"wheel check: {name}: the two engines' backbones differ: {sorted(set(ours) ^ set(theirs))[:5]}")
            n2 = sum(p.numel() for p in d2_model.parameters())
            line += f", detectron2 engine {n2 / 1e6:.1f} M, the same backbone"
        step(line)


def check_lazy(names) -> None:
    from detectron2.config import instantiate

    from resnet_backbones import model_zoo

    for name in names:
        cfg = model_zoo.get_config(name)
        if name.startswith("common/"):
            continue  # building blocks, used by the others
        cfg.model.backbone.weights = ""  # no download here
        if "weights" in cfg.model.roi_heads.get("res5", {}):
            cfg.model.roi_heads.res5.weights = ""  # the C4 models' res5 head
        model = instantiate(cfg.model).eval()
        with torch.no_grad():
            out = model([{"image": torch.zeros(3, 64, 96, dtype=torch.uint8), "height": 64, "width": 96}])
        assert out[0]["instances"].image_size == (64, 96)
        n = sum(p.numel() for p in model.parameters())
        step(f"{name}: instantiated ({n / 1e6:.1f} M parameters), CPU forward ok")


def check_console_command(engine: str, workdir: str) -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "resnet-backbones-train-net")
    out = os.path.join(workdir, f"out_{engine}")
    # Random FrozenBN would explode without ImageNet weights (none can be downloaded here): train BN.
    cmd = [exe, "--engine", engine, "--config", "faster_rcnn_R101.yaml", "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
           "MODEL.RESNETS.NORM", "BN", "SOLVER.BASE_LR", "0.001", "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "1",
           "DATASETS.TRAIN", '("synthetic_shapes_train",)', "DATASETS.TEST", "()", "INPUT.MIN_SIZE_TRAIN", "(128,)",
           "INPUT.MAX_SIZE_TRAIN", "256", "MODEL.ROI_HEADS.NUM_CLASSES", "3", "OUTPUT_DIR", out]
    start = time.time()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.isfile(os.path.join(out, "model_final.pth")):
        sys.exit(f"wheel check: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    step(f"resnet-backbones-train-net --config faster_rcnn_R101.yaml on the {engine} engine: "
         f"2 iterations, model_final.pth written ({time.time() - start:.0f} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkout", required=True, help="the source checkout the wheel was built from")
    p.add_argument("--require-detectron2", action="store_true")
    args = p.parse_args()
    if os.path.realpath(os.getcwd()).startswith(os.path.realpath(args.checkout)):
        sys.exit("wheel check: run it from a folder outside the checkout")
    check_location(args.checkout)
    from resnet_backbones import model_zoo
    from resnet_backbones.d2 import detectron2_available

    with_d2 = detectron2_available()
    if args.require_detectron2 and not with_d2:
        sys.exit("wheel check: --require-detectron2 but detectron2 does not import in this venv")
    names = model_zoo.list_configs()
    check_configs_shipped(args.checkout, names)
    step(f"{len(names)} configs shipped; detectron2 {'installed' if with_d2 else 'not installed'}")
    check_yaml([n for n in names if n.endswith(".yaml")], with_d2)
    if with_d2:
        check_lazy([n for n in names if n.endswith(".py")])
    with tempfile.TemporaryDirectory() as tmp:
        if not args.require_detectron2:  # .ci/run's second run: its first, without detectron2, trained this
            check_console_command("torchvision", tmp)
        if with_d2:
            check_console_command("detectron2", tmp)
    step("passed")


if __name__ == "__main__":
    main()
