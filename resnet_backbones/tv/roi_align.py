"""``roi_align``: torchvision's op, with its CPU backward run on every CPU thread.

torchvision's CPU ``_roi_align_backward`` is one serial loop over every output element and each of its
bilinear samples. On the quick schedules it was 26 % (FP32) to 38 % (bf16) of a training iteration,
~120 ms per call on one core while the others waited. Channels are independent in RoIAlign (channel c
of the input gradient depends on channel c of the output gradient alone), so this backward runs the
same kernel on ``torch.get_num_threads()`` channel slices in parallel threads (the op releases the GIL)
and concatenates them: bit-identical to torchvision's backward (tests/test_parity.py), 1.9x faster on 2
cores. As torchvision's autocast wrapper does, the kernel runs in float32 under autocast.

The forward pass is torchvision's op, unchanged: its CPU kernel computes each ROI's bilinear weights once
and reuses them across channels, so channel slices repeat that work. Measured with the forward split
too: no gain in the kernel, and whole-detector inference got slower.

Used by :class:`~resnet_backbones.tv.parity.poolers.MultiLevelRoIAlign`; CUDA tensors and calls without a
gradient go straight to torchvision's op, whose CUDA kernels are already parallel.
"""
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import torch
from torchvision.ops import roi_align as tv_roi_align

__all__ = ["roi_align"]

_pool: Optional[ThreadPoolExecutor] = None
_pool_size = 0


def _over_channels(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` for a per-channel ``fn``, computed on channel slices of ``x`` in parallel threads."""
    global _pool, _pool_size
    n = min(torch.get_num_threads(), x.shape[1])
    if n == 1:
        return fn(x)
    if _pool_size != n:  # first use, or torch.set_num_threads changed since
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="roi_align"), n

    def run(part):
        with torch.no_grad():  # grad mode is per thread: the workers must not record a graph
            return fn(part.contiguous())

    return torch.cat(list(_pool.map(run, x.chunk(n, dim=1))), dim=1)


class _RoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, rois, output_size, spatial_scale, sampling_ratio, aligned):
        # The dtype torchvision's kernel runs in: float32 under autocast (its autocast wrapper casts).
        compute_dtype = torch.float32 if torch.is_autocast_enabled("cpu") and input.dtype != torch.float64 \
            else input.dtype
        ctx.save_for_backward(rois.to(compute_dtype))
        ctx.args = (input.shape, input.dtype, compute_dtype, spatial_scale, output_size, sampling_ratio, aligned,
                    input.is_contiguous(memory_format=torch.channels_last))
        return tv_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    def backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        (batch, _, height, width), dtype, compute_dtype, scale, (out_h, out_w), ratio, aligned, channels_last = \
            ctx.args
        grad_input = _over_channels(lambda part: torch.ops.torchvision._roi_align_backward(
            part, rois, scale, out_h, out_w, batch, part.shape[1], height, width, ratio, aligned),
            grad.to(compute_dtype))
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return grad_input.to(dtype).contiguous(memory_format=fmt), None, None, None, None, None


def roi_align(input: torch.Tensor, rois: torch.Tensor, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """``torchvision.ops.roi_align`` (``rois`` a (K, 5) tensor of batch index, x1, y1, x2, y2) whose
    backward runs on all CPU threads for CPU tensors that need a gradient."""
    if input.device.type != "cpu" or not (torch.is_grad_enabled() and input.requires_grad) or input.dim() != 4 \
            or not torch.is_tensor(rois):
        return tv_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    return _RoIAlign.apply(input, rois, tuple(output_size), float(spatial_scale), int(sampling_ratio), bool(aligned))
