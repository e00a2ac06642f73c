"""A trial's Optuna heartbeat, kept beside the storage: a thread that beats while the trial runs."""

from __future__ import annotations

import threading

import optuna


class Heartbeat:
    """Records an Optuna heartbeat for one trial every ``interval`` seconds while it runs.

    Optuna only beats for ``study.optimize``; trials taken with ``ask`` (every backend here) need
    their own, so that a dead worker's trials go stale and ``reap`` fails and re-queues them.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{trial_id}")

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a database hiccup must not kill the trial; the next beat retries
                pass

    def __enter__(self) -> Heartbeat:
        self.storage.record_heartbeat(self.trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
