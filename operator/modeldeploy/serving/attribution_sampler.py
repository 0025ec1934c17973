"""The attribution metrics' sample: a share of answered requests explained after their
answer is sent (model.yaml `explain.sample_rate`), so the requests sampled wait for nothing.

One explanation runs at a time, on a thread of its own: a request drawn while one runs is
not explained (the sample thins out under load instead of queueing work). A drawn request
that asked for its attributions (`parameters.explain`) is counted with those, for free. The
sample is drawn at random, never by who asks, so the window's mean stays one of the traffic.
"""

import logging
import random
from concurrent.futures import Future, ThreadPoolExecutor

from modeldeploy.serving.model import Columns
from modeldeploy.serving.monitor import Monitor
from modeldeploy.serving.pipeline import Inference, InferencePipeline

log = logging.getLogger(__name__)


class AttributionSampler:
    def __init__(
        self,
        pipeline: InferencePipeline,
        monitor: Monitor,
        sample_rate: float,
        rng: random.Random | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._monitor = monitor
        self._rate = sample_rate
        self._random = (rng or random.Random()).random
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")
        self._running: Future[None] | None = None

    def offer(self, inference: Inference) -> None:
        """Draws whether this answered request is explained for the metrics (called from the
        event loop, once its answer is made)."""
        if self._random() >= self._rate:
            return
        if inference.attributions is not None:
            self._monitor.observe_attributions(inference.attributions)
            return
        if self._running is not None and not self._running.done():
            return
        self._running = self._pool.submit(self._explain, inference.features)

    def _explain(self, features: Columns) -> None:
        try:
            self._monitor.observe_attributions(self._pipeline.explain(features))
        except Exception:  # the request was answered; only its count is lost
            log.exception("explaining a sampled request failed")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
