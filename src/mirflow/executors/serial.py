"""The serial executor: everything in the calling process, one chunk at a time (for debugging)."""

from __future__ import annotations

from concurrent.futures import Future

from ..run.worker import AnalyzerSpec, WorkUnit, Worker
from ..core.sidecar import AnalyzerResult


class SerialExecutor:
    """Runs each submitted chunk immediately in this process; analyzers are set up once."""

    capacity = 1

    def __init__(self, specs: list[AnalyzerSpec], *, device: str = "auto") -> None:
        self.worker = Worker(specs, device=device)

    def submit(self, units: list[WorkUnit]) -> "Future[list[dict[str, AnalyzerResult]]]":
        fut: Future = Future()
        try:
            fut.set_result(self.worker.process(units))
        except Exception as exc:  # noqa: BLE001 - surfaced by the coordinator per track
            fut.set_exception(exc)
        return fut

    def shutdown(self, *, cancel: bool = False) -> None:
        self.worker.close()
