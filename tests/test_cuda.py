"""The CUDA paths: fp16 AMP + GradScaler, channels_last, bf16/fp16 autocast, NCCL DDP, a quick schedule.

Skipped without a GPU; ``tools/gpu_check.sh`` runs them on one (budget: 3.5 minutes on an H100) and
fails if any was skipped.
"""
import copy
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from test_optimize import pretrained_like  # FrozenBN with trained-looking statistics: outputs of order 1
from test_train import QUICK, losses_by_iteration, run_tool

from resnet_backbones.config import load_config
from resnet_backbones.d2 import detectron2_available
from resnet_backbones.modeling import to_channels_last
from resnet_backbones.tv.train import Trainer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (tools/gpu_check.sh runs these)")]

# detectron2 when importable; when not, its run is not collected (rather than skipped), so that
# gpu_check.sh's "nothing skipped" holds on a machine without it (it prints which engines ran).
ENGINES = ["torchvision"] + (["detectron2"] if detectron2_available() else [])


@pytest.fixture(scope="session", autouse=True)
def synthetic_cache(tmp_path_factory):
    path = os.environ.get("RESNET_BACKBONES_DATA") or str(tmp_path_factory.mktemp("rbdata"))
    os.environ["RESNET_BACKBONES_DATA"] = path
    return path


@pytest.fixture
def no_tf32():
    """True FP32 references: cuDNN convolutions default to TF32 on Ampere and newer (10-bit mantissa)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def cuda_cfg(out_dir, *extra):
    """The quick schedule on CUDA at its own image sizes and batch, without evaluation."""
    return load_config(QUICK, [
        "OUTPUT_DIR", str(out_dir), "MODEL.DEVICE", "cuda", "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()",
        "MODEL.RESNET_BACKBONES.LOG_PERIOD", "1", *extra], use_detectron2=False)


def trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def unchanged(before, model):
    after = dict(model.named_parameters())
    return [n for n, p in before.items() if torch.equal(p, after[n].detach())]


def test_fp16_amp_step_with_grad_scaler(tmp_path):
    # No warmup: the first step moves every parameter visibly (the warmup LR starts at 2e-5).
    trainer = Trainer(cuda_cfg(tmp_path, "SOLVER.AMP.ENABLED", "True", "SOLVER.WARMUP_ITERS", "0"))
    assert trainer.amp_dtype is torch.float16 and trainer.scaler.is_enabled()
    assert {p.device.type for p in trainer.model.parameters()} == {"cuda"}
    dtypes = []
    trainer.model.backbone.register_forward_hook(lambda m, i, out: dtypes.append({v.dtype for v in out.values()}))
    before = trainable(trainer.model)
    images, targets = next(iter(trainer._loader()))
    # GradScaler starts at 2**16 and skips the step (halving the scale) while fp16 gradients overflow.
    for iteration in range(5):
        scale = trainer.scaler.get_scale()
        losses = trainer.run_step(iteration, images, targets)
        assert all(math.isfinite(v) for v in losses.values()), losses
        if trainer.scaler.get_scale() == scale:  # no inf/NaN gradient: the optimizer stepped
            break
    else:
        pytest.fail(f"GradScaler skipped 5 steps in a row (scale now {trainer.scaler.get_scale()})")
    assert dtypes[0] == {torch.float16}, "the backbone did not run under fp16 autocast"
    assert not unchanged(before, trainer.model)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in params)  # FP32 master weights


def test_channels_last_matches_nchw_outputs_and_gradients(no_tf32):
    model = pretrained_like(depth=50).cuda()
    nhwc = to_channels_last(copy.deepcopy(model))
    x = torch.randn(2, 3, 224, 320, device="cuda")
    weights = None
    results = []
    for m, inp in ((model, x), (nhwc, x.contiguous(memory_format=torch.channels_last))):
        out = m(inp)
        if weights is None:
            weights = {k: torch.randn_like(v) for k, v in out.items()}
        sum((v * weights[k]).sum() for k, v in out.items()).backward()
        results.append((out, {n: p.grad for n, p in m.named_parameters() if p.grad is not None}))
    (ref, ref_grads), (out, grads) = results
    for k in ref:
        assert out[k].is_contiguous(memory_format=torch.channels_last), f"{k} fell back to NCHW"
        err = ((out[k] - ref[k]).abs().max() / ref[k].abs().max()).item()
        assert err <= 1e-3, (k, err)  # different cuDNN algorithms per layout; a layout bug is O(1)
    assert grads.keys() == ref_grads.keys() and len(grads) > 50
    for n, g in ref_grads.items():
        err = ((grads[n] - g).norm() / g.norm()).item()
        assert err <= 1e-3, (n, err)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_backbone_keeps_cosine_similarity(dtype, no_tf32):
    model = pretrained_like(depth=50).cuda()
    x = torch.randn(2, 3, 224, 320, device="cuda")
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cuda", dtype=dtype):
            out = model(x)
    for k in ref:
        assert out[k].dtype == dtype, (k, out[k].dtype)
        cos = F.cosine_similarity(ref[k].flatten(), out[k].float().flatten(), dim=0).item()
        assert cos >= 0.999, (k, cos)


@pytest.mark.skipif(not dist.is_nccl_available(), reason="this torch build has no NCCL")
def test_one_process_nccl_ddp_trains(tmp_path):
    from resnet_backbones.tv.distributed import _free_port, _init, get_world_size

    # launch() runs a single process without a process group, so start the group as its workers do.
    _init(0, 1, 0, 1, f"tcp://127.0.0.1:{_free_port()}")
    try:
        assert dist.get_backend() == "nccl" and get_world_size() == 1
        trainer = Trainer(cuda_cfg(tmp_path, "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "4"))
        before = trainable(trainer.model)
        # As the Trainer wraps it for several processes (which it does not for one): device_ids=None.
        trainer.model = torch.nn.parallel.DistributedDataParallel(trainer.model, device_ids=None)
        trainer.train()
        ones = torch.ones(3, device="cuda")
        dist.all_reduce(ones)
        assert ones.tolist() == [1.0, 1.0, 1.0]
    finally:
        dist.destroy_process_group()
    losses = losses_by_iteration(tmp_path)
    assert sorted(losses) == [1, 2, 3] and all(math.isfinite(v) for v in losses.values()), losses
    assert not unchanged(before, trainer.model.module)
    state = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    assert not any(k.startswith("module.") for k in state), "the checkpoint holds the DDP wrapper's names"


def bbox_ap(log: str) -> float:
    """AP from the "Evaluation results for bbox" table both engines print (header, separator, row)."""
    lines = log.splitlines()
    at = [i for i, line in enumerate(lines) if "Evaluation results for bbox" in line]
    assert at, "no bbox AP table in the output"
    header, _, row = lines[at[-1] + 1:at[-1] + 4]
    assert header.split("|")[1].strip() == "AP", lines[at[-1]:at[-1] + 4]
    return float(row.split("|")[1])


@pytest.mark.parametrize("engine", ENGINES)
def test_quick_schedule_50_iterations_with_evaluation(engine, tmp_path):
    """The quick schedule's recipe shrunk to 50 iterations (warmup and step scaled), trained and
    evaluated on the 100 validation images by tools/train_net.py on CUDA."""
    r = run_tool("tools/train_net.py", "--config", QUICK, "--engine", engine, "OUTPUT_DIR", str(tmp_path),
                 "MODEL.DEVICE", "cuda", "SOLVER.MAX_ITER", "50", "SOLVER.WARMUP_ITERS", "25", "SOLVER.STEPS", "(40,)",
                 "SOLVER.CHECKPOINT_PERIOD", "1000")
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    if engine == "torchvision":
        assert "iteration 0 to 50 on cuda:0" in log
    assert "Training health: healthy" in log, log[-3000:]
    losses = losses_by_iteration(tmp_path)
    assert max(losses) >= 49 and all(math.isfinite(v) for v in losses.values()), losses
    ap = bbox_ap(r.stdout)
    print(f"{engine}: bbox AP {ap:.3f} after 50 iterations; total_loss {losses}")
    assert math.isfinite(ap) and 0 <= ap <= 100
