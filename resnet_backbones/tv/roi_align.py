"""``roi_align``: torchvision's kernels, run on every CPU thread.

torchvision's CPU RoIAlign kernels are serial loops over the ROIs (forward) and over every output
element and each of its bilinear samples (backward). On the quick schedules the backward alone was 26 %
(FP32) to 38 % (bf16) of a training iteration, ~120 ms per call on one core while the others waited.
Channels are independent in RoIAlign (channel c of the output, and of the input gradient, depends on
channel c alone), so this module runs the same kernels on ``torch.get_num_threads()`` channel slices in
parallel threads (the ops release the GIL) and concatenates the slices: bit-identical to torchvision's
op, forward and backward (tests/test_parity.py), 1.85x faster on 2 cores. As torchvision's autocast
wrapper does, the kernels run in float32 under autocast and the output takes the input's dtype.

Used by :class:`~resnet_backbones.tv.parity.MultiLevelRoIAlign` on CPU tensors; CUDA tensors go to
torchvision's op, whose kernels are already parallel.
"""
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import torch
from torchvision.ops import roi_align as tv_roi_align

__all__ = ["roi_align"]

_pool: Optional[ThreadPoolExecutor] = None


def _over_channels(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` for a per-channel ``fn``, computed on channel slices of ``x`` in parallel threads."""
    global _pool
    n = min(torch.get_num_threads(), x.shape[1])
    if n == 1:
        return fn(x)
    if _pool is None or _pool._max_workers != n:
        _pool = ThreadPoolExecutor(n, thread_name_prefix="roi_align")

    def run(part):
        with torch.no_grad():  # grad mode is per thread: the workers must not record a graph
            return fn(part.contiguous())

    return torch.cat(list(_pool.map(run, x.chunk(n, dim=1))), dim=1)


class _RoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, rois, output_size, spatial_scale, sampling_ratio, aligned):
        if torch.is_autocast_enabled("cpu") and input.dtype != torch.float64:
            x, rois = input.float(), rois.float()
        else:
            x = input
        out_h, out_w = output_size
        ctx.save_for_backward(rois)
        ctx.args = (input.shape, input.dtype, x.dtype, spatial_scale, output_size, sampling_ratio, aligned,
                    input.is_contiguous(memory_format=torch.channels_last))
        return _over_channels(lambda part: torch.ops.torchvision.roi_align(
            part, rois, spatial_scale, out_h, out_w, sampling_ratio, aligned), x).to(input.dtype)

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
    """``torchvision.ops.roi_align`` (``rois`` a (K, 5) tensor of batch index, x1, y1, x2, y2), run on
    all CPU threads for CPU tensors."""
    if input.device.type != "cpu" or input.dim() != 4 or not torch.is_tensor(rois):
        return tv_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    return _RoIAlign.apply(input, rois, tuple(output_size), float(spatial_scale), int(sampling_ratio), bool(aligned))
