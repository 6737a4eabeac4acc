"""Measurements of ``tools/benchmark.py``, each row in a fresh (spawned) process so that its peak memory
is its own: medians of timed runs after warm-up, CUDA max_memory_allocated or the growth of the CPU's
peak resident set, the activation memory autograd saves for backward, fvcore FLOPs, the matmul peak."""
import os
import statistics
import time
import warnings

import torch

from .rows import build_backbone, build_detector, detector_eval, detector_step, half_dtype

__all__ = ["measure", "run_isolated", "matmul_peak", "int8_matmul_peak", "count_gflop", "detector_eval_gflop",
           "saved_activations_mb", "sync"]

def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> None:
    # ru_maxrss survives fork+exec (a spawned child starts with its parent's peak): reset VmHWM.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def saved_activations_mb(model, x, autocast) -> float:
    """MB of tensors autograd keeps for backward after one forward pass (each storage once; parameters and
    buffers excluded): the activation memory a training step holds at its peak, free of allocator noise.
    Inside a checkpointed region checkpointing's own hooks take over, so what it recomputes is not counted."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        out = model(x)
    del out
    return sum(seen.values()) / 2**20


def count_gflop(model, x) -> float:
    """fvcore's count on this row's own model (one multiply-add = 2 FLOPs here), forward only."""
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    counter = FlopCountAnalysis(model.eval(), x)
    counter.unsupported_ops_warnings(False)
    counter.uncalled_modules_warnings(False)
    with torch.no_grad():
        total = counter.total()
    model.train(was_training)
    return 2 * total / 1e9


def detector_eval_gflop(depth: int, size, config: str) -> float:
    """The forward FLOPs of one image through ``config``'s detector at ``size`` (fvcore on the exported
    graph of the torchvision engine, :class:`resnet_backbones.export.DetectorGraph`: the convolutions and
    linear layers of backbone, RPN head and box head, which both engines share; RoIAlign, NMS and the
    elementwise ops uncounted). The same for every detector-eval row: their arithmetic is one model's."""
    from resnet_backbones.export import DetectorGraph
    from resnet_backbones.inference import inference_model

    overrides = ["INPUT.MIN_SIZE_TEST", str(min(size)), "INPUT.MAX_SIZE_TEST", str(max(size))]
    model, cfg = build_detector("tv", depth, torch.device("cpu"), config, overrides)
    graph = DetectorGraph(inference_model(cfg, model.eval())).eval()
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return count_gflop(graph, (image, torch.tensor([list(size)], dtype=torch.int64)))


def measure(variant: str, mode: str, depth: int, size, batch: int, device_name: str, repeats: int, warmup: int,
            threads: int, stride_in_1x1: bool, detector_config: str, queue, profile: bool = False) -> None:
    """Child process: time ``repeats`` runs after ``warmup`` ones; report medians and peak memory. With
    ``profile`` (detector modes), the timed runs are followed by as many under torch.profiler
    (:func:`resnet_backbones.benchmark.profile.profile_step`), reported as ``profile``."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation notes from imports
    try:
        torch.set_num_threads(threads)
        device = torch.device(device_name)
        amp = variant.endswith("-amp")
        autocast = torch.autocast(device.type, dtype=half_dtype(device), enabled=amp)
        torch.manual_seed(0)
        gflop = float("nan")
        first_loss = []
        saved_mb = float("nan")
        if mode == "detector":
            step, n_params, first_loss = detector_step(variant, depth, size, batch, device, detector_config)
        elif mode == "detector-eval":
            step, n_params = detector_eval(variant, depth, size, batch, device, detector_config)
        else:
            model = build_backbone(variant, depth, stride_in_1x1)
            x = torch.randn(batch, 3, *size) * 50
            gflop = count_gflop(model, x[:1]) * batch
            model = model.to(device)
            x = x.to(device)
            channels_last = variant.startswith(("ours-opt", "ours-compiled"))
            if mode == "inference":
                model.eval()
                if channels_last:
                    from resnet_backbones.modeling import optimize_for_inference

                    optimize_for_inference(model)
                if variant.startswith("ours-compiled"):
                    from resnet_backbones.modeling import compile_for_inference

                    model = compile_for_inference(model)
            else:
                model.train()
                if channels_last:
                    model.to(memory_format=torch.channels_last)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            n_params = sum(p.numel() for p in model.parameters())
            params = [p for p in model.parameters() if p.requires_grad]
            if mode == "train":
                saved_mb = saved_activations_mb(model, x, autocast)

            def step():
                if mode == "inference":
                    with torch.no_grad(), autocast:
                        model(x)
                else:
                    for p in params:
                        p.grad = None
                    with autocast:
                        out = model(x)
                    sum(v.float().mean() for v in out.values()).backward()

        sync(device)
        base_rss = _rss_bytes()
        if device.type == "cpu":
            _reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base_cuda = torch.cuda.memory_allocated()
        for _ in range(warmup):
            step()
        sync(device)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            sync(device)
            times.append(time.perf_counter() - t0)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated() - base_cuda
        else:
            peak = _peak_rss_bytes() - base_rss
        extra = {"first_loss": first_loss[0]} if first_loss else {}
        if profile and mode.startswith("detector"):
            from .profile import profile_step

            extra["profile"] = profile_step(step, step.model, repeats, device)
        queue.put({"median_s": statistics.median(times), "times": times, "peak_mb": max(peak, 0) / 2**20,
                   "params": n_params, "gflop": gflop, "saved_mb": saved_mb, **extra})
    except Exception as e:  # reported in the table instead of killing the whole run
        queue.put({"error": f"{type(e).__name__}: {e}"})


def _matmul_rate(run, n: int, repeats: int) -> float:
    """G(FL)OP/s of ``run``, one n x n x n matrix product that returns when done: a warm-up call, then the
    median of ``repeats`` timed calls."""
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def matmul_peak(device, dtype, n=2048, repeats=5) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def run():
        a @ b
        sync(device)
    return _matmul_rate(run, n, repeats)


def int8_matmul_peak(n=2048, repeats=5):
    """The int8 exports' matmul peak, GOP/s: onnxruntime's ``MatMulInteger`` (uint8 activations times a
    constant int8 matrix, int32 sums, as the quantized convolutions' inner products) on the CPU, timed as
    :func:`matmul_peak` times torch's. None without onnx and onnxruntime."""
    try:
        import numpy as np
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-128, 128, (n, n), dtype=np.int8), "b")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "int8_matmul",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8)}
    return _matmul_rate(lambda: session.run(None, feed), n, repeats)


def run_isolated(*args, profile: bool = False) -> dict:
    """:func:`measure` in a spawned process: its result dict."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=measure, args=(*args, queue, profile))
    proc.start()
    result = queue.get()
    proc.join()
    return result




def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
