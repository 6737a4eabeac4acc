"""TEST.EXPECTED_RESULTS checked against an evaluation's results, as detectron2's
``detectron2.evaluation.testing.verify_results`` checks them."""
import logging
import math
import pprint
from typing import Mapping

from ..errors import ResultsVerificationError

__all__ = ["verify_results"]

logger = logging.getLogger("resnet_backbones")


def verify_results(cfg, results: Mapping[str, Mapping[str, float]]) -> None:
    """TEST.EXPECTED_RESULTS as detectron2's ``detectron2.evaluation.verify_results``.

    Each entry ``[task, metric, expected, tolerance]`` (e.g. ``["bbox", "AP", 38.6, 0.5]``) requires
    ``results[task][metric]`` to exist, be finite and lie within ``tolerance`` of ``expected``.
    ``results`` is what evaluation returns: ``{"bbox": {"AP": ..}, "segm": {..}}`` for one test
    dataset, ``{"<dataset>/bbox": ..}`` for several. Raises :class:`ResultsVerificationError` naming
    every failed entry (detectron2 logs them and calls ``sys.exit(1)``); nothing to check passes.
    """
    expected = cfg.TEST.EXPECTED_RESULTS
    if not len(expected):
        return
    failures = []
    for entry in expected:
        if len(entry) != 4:
            failures.append(f"{list(entry)}: an entry must be [task, metric, expected, tolerance]")
            continue
        task, metric, value, tolerance = entry
        actual = results.get(task, {}).get(metric)
        if actual is None:
            failures.append(f"{task}/{metric}: no such result (have: {sorted(results)})")
        elif not math.isfinite(actual):
            failures.append(f"{task}/{metric} = {actual}, expected {value} ± {tolerance}")
        elif abs(actual - value) > tolerance:
            failures.append(f"{task}/{metric} = {actual:.4f}, expected {value} ± {tolerance}")
    if failures:
        logger.error("Result verification failed! Actual results: %s", pprint.pformat(dict(results)))
        raise ResultsVerificationError("TEST.EXPECTED_RESULTS not met:\n  " + "\n  ".join(failures))
    logger.info("Results verification passed.")
