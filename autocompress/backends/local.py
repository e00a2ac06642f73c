"""The ``local`` backend: trials run one after another in this process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from autocompress.backends import register_backend

if TYPE_CHECKING:
    from autocompress.search.runner import JobRunner


@register_backend("local")
def run_local(runner: "JobRunner", should_stop: Callable[[], bool]) -> None:
    from autocompress.search.runner import summary

    job = runner.job
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), console=runner.console, disable=not runner.progress) as bar:
        task = bar.add_task(f"search {job.name}", total=job.search.trials, completed=runner.finished(), last="")
        while (trial := runner.next_trial(should_stop)) is not None:
            frozen = runner.run_trial(trial)
            bar.update(task, completed=runner.finished(), last=summary(frozen, job))
