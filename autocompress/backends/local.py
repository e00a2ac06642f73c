"""The ``local`` backend: trials run one after another in this process."""

from __future__ import annotations

from collections.abc import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from autocompress.backends.base import register_backend
from autocompress.search.runner import JobRunner, summary


@register_backend("local")
def run_local(runner: JobRunner, should_stop: Callable[[], bool]) -> None:
    """The runner's own loop, with a progress bar."""
    job = runner.job
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
        console=runner.console,
        disable=not runner.progress,
    ) as bar:
        task = bar.add_task(f"search {job.name}", total=job.search.trials, completed=runner.finished(), last="")
        runner.search(
            should_stop,
            on_trial=lambda frozen: bar.update(task, completed=runner.finished(), last=summary(frozen, job)),
        )
