"""Where a detector step's time goes (``tools/benchmark.py --profile``): torch.profiler over the
benchmark's detector rows (one SGD step, or what --eval-only does per image), per module and per op.

Per module: the forward pass of each part of the detector, timed by a ``record_function`` scope opened
and closed by forward hooks (``body`` is ``backbone.bottom_up``, or the whole ``backbone`` of C4 and DC5; ``FPN`` is the rest of ``backbone``;
``RPN`` is ``proposal_generator`` / ``rpn``; ``transform`` exists on the torchvision engine only, and
detectron2's ``preprocess_image`` falls in ``rest``); ``rest`` is everything else of the step: the
backward pass, the optimizer, detectron2's preprocessing and event storage. Per op: the most expensive
ops by self CPU time (backward ops included), each as a share of the step.
"""
from typing import Dict, List

import torch
from torch.profiler import ProfilerActivity, profile, record_function

__all__ = ["SECTIONS", "profile_step"]

# (label, submodule names tried in order); nested scopes are made exclusive afterwards (FPN minus body).
# A body-only backbone (C4, DC5) is the body, and has no FPN part.
SECTIONS = (("body", ("backbone.bottom_up", "backbone")), ("FPN", ("backbone",)), ("RPN", ("proposal_generator", "rpn")),
            ("ROI heads", ("roi_heads",)), ("transform", ("transform",)))


def _scoped(model) -> List:
    handles, seen = [], set()
    for label, names in SECTIONS:
        for name in names:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                continue
            if id(module) in seen:
                break
            seen.add(id(module))
            open_scopes = []

            def pre(mod, args, label=label, open_scopes=open_scopes):
                scope = record_function(f"section: {label}")
                scope.__enter__()
                open_scopes.append(scope)

            def post(mod, args, out, open_scopes=open_scopes):
                open_scopes.pop().__exit__(None, None, None)

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
            break
    return handles


def profile_step(step, model, steps: int, device, top: int = 15) -> Dict:
    """Profile ``steps`` calls of ``step`` (already warmed up): milliseconds per step in all, per section,
    and for the ``top`` ops by self time."""
    handles = _scoped(model)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    try:
        with profile(activities=activities) as prof:
            with record_function("section: step"):
                for _ in range(steps):
                    step()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
    finally:
        for h in handles:
            h.remove()
    events = prof.key_averages()
    totals = {e.key[len("section: "):]: e.cpu_time_total / 1e3 / steps for e in events if e.key.startswith("section: ")}
    step_ms = totals.pop("step")
    if "body" in totals and "FPN" in totals:
        totals["FPN"] -= totals["body"]
    sections = {label: totals[label] for label, _ in SECTIONS if label in totals}
    sections["rest (backward, optimizer, other)"] = step_ms - sum(sections.values())
    ops = sorted((e for e in events if not e.key.startswith("section: ")), key=lambda e: e.self_cpu_time_total,
                 reverse=True)[:top]
    return {"step_ms": step_ms, "sections": sections,
            "ops": [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3 / steps, "calls": e.count / steps}
                    for e in ops]}
