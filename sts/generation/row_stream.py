"""One row's ids while they are generated: `generate` in a thread, a transformers streamer feeding a queue.

    stream = stream_row(backend, prompt, request)      # backend.stream when it has one, else the fallback
    for new_ids in stream:                              # [k] int64, in order, as the model writes them
        ...
    stream.ids                                          # [G] int64: exactly backend.generate([prompt], request)[0]

`TransformersBackend.stream` runs the very `generate` call of `TransformersBackend.generate` (same
logits processors, stopping criteria, loop guard and seeding) with a `transformers` streamer that
hands each new token to the consumer, so the streamed ids equal the non-streaming call's for the same
seed (tests/test_stream.py). A backend without `stream` (vLLM's offline engine returns whole
completions) is wrapped: its row comes in one piece when it is done, so a caller still streams the
decoding of the audio but not the generation. Leaving the loop early (or `close()`) stops the
generation at its next step.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, wait

import numpy as np

_DONE = object()


class RowStream:
    """Iterable of a row's new ids `[k]` int64; `ids` (`[G]` int64, the row as `generate` cuts it)
    once the iteration is over. Iterate once.

    `run(streamer, cancel)` generates the row and returns it (`threaded=False`: called with None,
    None in the consumer's thread, the row yielded whole); `streamer` (a transformers
    `BaseStreamer`) receives the prompt first and then each new token, `cancel` (a transformers
    `StoppingCriteria`) stops the generation when the consumer leaves early. It runs on `executor`
    (one worker thread, e.g. the backend's, so that CUDA graphs recorded in it are reused: torch
    keeps them per thread) or else in a thread of its own; an exception there is raised in the
    consumer.
    """

    def __init__(
        self,
        run: Callable[[object, object], np.ndarray],
        executor: Executor | None = None,
        *,
        threaded: bool = True,
    ):
        self._run = run
        self._executor = executor
        self._threaded = threaded
        self.ids: np.ndarray | None = None
        self._cancel = threading.Event()
        self._job: Future | threading.Thread | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._job is not None or self.ids is not None:
            raise RuntimeError("a RowStream is iterated once")
        if not self._threaded:  # a backend that cannot stream: its row, whole, in the caller's thread
            self.ids = np.asarray(self._run(None, None), dtype=np.int64)
            yield self.ids
            return
        from transformers import StoppingCriteria
        from transformers.generation.streamers import BaseStreamer

        items: queue.Queue = queue.Queue()
        outcome: dict = {}
        cancel_event = self._cancel

        class _Streamer(BaseStreamer):
            prompt_seen = False

            def put(self, value):
                if not self.prompt_seen:  # generate() puts the prompt first
                    self.prompt_seen = True
                    return
                items.put(np.asarray(value.reshape(-1).tolist(), dtype=np.int64))

            def end(self):
                pass

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                import torch

                return torch.full((input_ids.shape[0],), cancel_event.is_set(), device=input_ids.device)

        def work():
            try:
                outcome["ids"] = np.asarray(self._run(_Streamer(), _Cancel()), dtype=np.int64)
            except BaseException as err:  # handed to the consumer
                outcome["error"] = err
            finally:
                items.put(_DONE)

        if self._executor is not None:
            self._job = self._executor.submit(work)
        else:
            self._job = threading.Thread(target=work, name="sts-generate-stream", daemon=True)
            self._job.start()
        sent = 0
        try:
            while (item := items.get()) is not _DONE:
                sent += len(item)
                yield item
            self._wait()
            if "error" in outcome:
                raise outcome["error"]
            self.ids = outcome["ids"]
            if len(self.ids) > sent:  # a backend that returned the row at the end without streaming it
                yield self.ids[sent:]
        finally:
            self.close()

    def close(self) -> None:
        """Stop the generation (if it still runs) and wait for it."""
        self._cancel.set()
        self._wait()

    @property
    def running(self) -> bool:
        """Whether the generation is still running."""
        return self._job is not None and (
            not self._job.done() if isinstance(self._job, Future) else self._job.is_alive()
        )

    def _wait(self) -> None:
        if isinstance(self._job, Future):
            wait([self._job])
        elif self._job is not None and self._job is not threading.current_thread():
            self._job.join()


def stream_row(backend, prompt: Sequence[int] | np.ndarray, request) -> RowStream:
    """`backend.stream(prompt, request)` when the backend streams (`TransformersBackend`), else the
    whole row from `backend.generate([prompt], request)` in one piece when it is done."""
    if hasattr(backend, "stream"):
        return backend.stream(prompt, request)
    return RowStream(lambda streamer, cancel: backend.generate([prompt], request)[0], threaded=False)
