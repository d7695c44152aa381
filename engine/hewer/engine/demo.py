"""A demo worker written with the official Hatchet SDK: ``python -m hewer.engine.demo``.

``hewer dev --demo`` runs it with the ``HATCHET_CLIENT_*`` variables of the engine it just
started. It registers the three-task DAG ``hewer-demo`` (fetch -> transform -> summarize,
each child reading its parents' outputs), starts a worker, triggers one run, prints the
run's result as one JSON line on stdout, and keeps serving until it is terminated.

Nothing here is Hewer-specific: the same file runs against a Hatchet engine.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any, TextIO

from hatchet_sdk import Context, Hatchet
from pydantic import BaseModel

__all__ = ["main"]

log = logging.getLogger("hewer.demo")

WORKFLOW_NAME = "hewer-demo"
_TEXT = (
    "Hewer is a durable task engine. A durable task survives worker crashes, "
    "engine restarts and network trouble: the engine keeps its state in PostgreSQL."
)


class DemoInput(BaseModel):
    source: str = "hewer://demo/readme"
    top: int = 3


class Fetched(BaseModel):
    source: str
    text: str


class Transformed(BaseModel):
    words: list[str]
    top_words: list[tuple[str, int]]


class Summary(BaseModel):
    source: str
    characters: int
    word_count: int
    top_words: list[tuple[str, int]]
    headline: str


hatchet = Hatchet()
demo_workflow = hatchet.workflow(name=WORKFLOW_NAME, input_validator=DemoInput)


@demo_workflow.task(execution_timeout=timedelta(seconds=30))
def fetch(input: DemoInput, ctx: Context) -> Fetched:
    # A real pipeline would download input.source; the demo stays offline.
    return Fetched(source=input.source, text=_TEXT)


@demo_workflow.task(parents=[fetch], execution_timeout=timedelta(seconds=30))
def transform(input: DemoInput, ctx: Context) -> Transformed:
    fetched = ctx.task_output(fetch)
    words = [w.strip(".,:;").lower() for w in fetched.text.split()]
    words = [w for w in words if len(w) > 3]
    return Transformed(words=words, top_words=Counter(words).most_common(input.top))


@demo_workflow.task(parents=[fetch, transform], execution_timeout=timedelta(seconds=30))
def summarize(input: DemoInput, ctx: Context) -> Summary:
    fetched = ctx.task_output(fetch)
    transformed = ctx.task_output(transform)
    top = ", ".join(word for word, _ in transformed.top_words)
    return Summary(
        source=fetched.source,
        characters=len(fetched.text),
        word_count=len(transformed.words),
        top_words=transformed.top_words,
        headline=f"{fetched.source}: mostly about {top}",
    )


def _trigger_once(*, deadline_seconds: float = 60.0) -> None:
    """Run the workflow once and print its result.

    Triggering is retried while the engine catches up (the worker registers the workflow
    concurrently); the run itself is waited for once.
    """
    deadline = time.monotonic() + deadline_seconds
    delay = 0.5
    while True:
        try:
            ref = demo_workflow.run(DemoInput(), wait_for_result=False)
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                log.error("could not trigger the demo run: %s", exc)
                return
            log.info("demo run not accepted yet (%s), retrying", exc)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    log.info("triggered demo run %s", ref.workflow_run_id)
    try:
        result: dict[str, Any] = ref.result()
    except Exception as exc:
        log.error("the demo run %s failed: %s", ref.workflow_run_id, exc)
        return
    print(json.dumps({"workflow": WORKFLOW_NAME, "result": result}, sort_keys=True), file=_RESULT)
    _RESULT.flush()
    log.info("demo run finished; the worker keeps serving (Ctrl-C to stop)")


def _keep_stdout_for_the_result() -> TextIO:
    """A stream on the real stdout, for the result line; file descriptor 1 then points at
    stderr, so that whatever else writes to stdout (the SDK's logger does, in this process
    and in the worker processes it starts) ends up with the logs."""
    result = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(2, 1)
    return result


_RESULT: TextIO = sys.stdout


def main() -> None:
    global _RESULT
    _RESULT = _keep_stdout_for_the_result()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    worker = hatchet.worker("hewer-demo-worker", slots=5, workflows=[demo_workflow])
    # The worker owns the main thread (its own event loop and signal handlers); the run
    # is triggered from a daemon thread and waits for the worker to pick the tasks up.
    threading.Thread(target=_trigger_once, name="demo-trigger", daemon=True).start()
    worker.start()


if __name__ == "__main__":
    main()
