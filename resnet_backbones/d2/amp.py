"""Which detectron2 trainer runs SOLVER.AMP.ENABLED (or a LazyConfig's ``train.amp``) on a device: detectron2's
AMPTrainer on CUDA, bf16 autocast on a CPU with native bf16, else FP32."""
import logging
import time

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer

from ..precision import amp_dtype

__all__ = ["CPUAutocastTrainer", "amp_trainer"]

logger = logging.getLogger("resnet_backbones")


class CPUAutocastTrainer(SimpleTrainer):
    """detectron2's SimpleTrainer with the forward pass and the loss sum under CPU autocast: what
    detectron2's ``AMPTrainer`` does on CUDA, for SOLVER.AMP.ENABLED on a CPU (``AMPTrainer.run_step``
    asserts CUDA). ``precision`` is bfloat16, which keeps float32's exponent range, so no gradient
    scaler is needed; backward and the optimizer step run outside autocast, as in AMPTrainer.
    """

    def __init__(self, model, data_loader, optimizer, *, precision: torch.dtype = torch.bfloat16, **kwargs):
        super().__init__(model, data_loader, optimizer, **kwargs)
        self.precision = precision

    def run_step(self):
        assert self.model.training, "[CPUAutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast("cpu", dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                loss_dict = {"total_loss": loss_dict}
            losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        if self.async_write_metrics:
            self.concurrent_executor.submit(self._write_metrics, loss_dict, data_time, iter=self.iter)
        else:
            self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


def amp_trainer(model, data_loader, optimizer, device, setting: str = "SOLVER.AMP.ENABLED") -> SimpleTrainer:
    """The trainer for ``setting`` (mixed precision on) on ``device``: detectron2's AMPTrainer (fp16 +
    GradScaler) on CUDA; on a CPU, :class:`CPUAutocastTrainer` in bf16 where the CPU supports it
    natively, else the FP32 SimpleTrainer (:func:`~resnet_backbones.precision.amp_dtype` logs why)."""
    dtype = amp_dtype(torch.device(device), setting)
    if dtype == torch.float16:
        return AMPTrainer(model, data_loader, optimizer)
    if dtype is None:
        return SimpleTrainer(model, data_loader, optimizer)
    logger.info("%s on %s: %s autocast", setting, device, dtype)
    return CPUAutocastTrainer(model, data_loader, optimizer, precision=dtype)
