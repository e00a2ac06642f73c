"""lm-eval tasks: the stock definition (prompt, choices, metrics) with the data read from local files.

A local task is a YAML file in the ``eval_tasks`` catalog (``evaluators/``) that names the stock lm-eval task it
reuses, the files it reads (relative to the data directory) and the reader that turns them into
the fields the stock definition expects. Only where the data comes from is overridden; any other
task name is lm-eval's own, loaded as lm-eval would (from the hub cache or the network).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from autocompress.cache import file_digest, text_digest
from autocompress.catalog import catalog_dir, catalog_names, display_name, read_yaml
from autocompress.errors import ConfigError
from autocompress.evaluators.readers import READERS
from autocompress.validation import parse

CATALOG = "eval_tasks"  # shipped in autocompress/catalogs/eval_tasks/, linked as evaluators/
# Stock tasks without a local definition: a rough cost per example (tokens forwarded), for budgeting.
STOCK_TOKENS_PER_EXAMPLE = 256


class LocalTask(BaseModel):
    """One entry of the ``evaluators/`` catalog."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="the stock lm-eval task whose definition is reused")
    lm_eval_yaml: str = Field(description="its YAML inside lm_eval/tasks (looked up by name if moved)")
    metric: str = Field(description="the lm-eval metric reported as lm_eval:<task>, e.g. acc or acc_norm")
    reader: str = Field(description=f"how the files become lm-eval's fields: {', '.join(sorted(READERS))}")
    files: dict[str, str] = Field(description="role -> path relative to the data directory")
    tokens_per_example: int = Field(ge=1, description="tokens forwarded per example (SmolLM2 tokenizer), for cost")


@dataclass
class TaskSource:
    """Where a task's examples come from: local files (resolved) or lm-eval's own loader."""

    name: str
    metric: str
    tokens_per_example: int
    local: LocalTask | None = None
    files: dict[str, Path] | None = None

    def digest(self) -> str:
        """Content digest of the data and definition (what an evaluation result depends on)."""
        import lm_eval

        parts = [self.name, self.metric, lm_eval.__version__]
        if self.local is not None and self.files is not None:
            parts += [self.local.model_dump_json()] + [f"{k}={file_digest(p)}" for k, p in sorted(self.files.items())]
        return text_digest(*parts)


def local_task_names() -> list[str]:
    return catalog_names(CATALOG)


def load_local_task(name: str) -> LocalTask | None:
    path = catalog_dir(CATALOG) / f"{name}.yaml"
    if not path.is_file():
        return None
    where = display_name(CATALOG, path)
    task = parse(LocalTask, read_yaml(path, where), where)
    if task.reader not in READERS:
        raise ConfigError(f"{where}.reader", f"unknown reader {task.reader!r}; allowed: {', '.join(sorted(READERS))}")
    return task


def task_source(name: str, data_dir: Path | None) -> TaskSource:
    """The local definition when the catalog has one and a data directory is set, else lm-eval's own."""
    local = load_local_task(name)
    if local is None or data_dir is None:
        return TaskSource(
            name, local.metric if local else "acc", local.tokens_per_example if local else STOCK_TOKENS_PER_EXAMPLE
        )
    files = {role: data_dir / rel for role, rel in local.files.items()}
    for role, path in files.items():
        if not path.is_file():
            raise ConfigError(
                f"lm_eval:{name}",
                f"data file {path} is missing (files.{role} of task {name!r}); "
                "point --data / evaluation.data / $AUTOCOMPRESS_DATA at the folder "
                f"that holds {local.files[role]}",
            )
    return TaskSource(name, local.metric, local.tokens_per_example, local, files)


@functools.lru_cache(maxsize=1)
def _task_manager() -> Any:
    """lm-eval's index of every stock task (indexing takes seconds; built once, only when needed)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def _stock_yaml(local: LocalTask) -> Path:
    import lm_eval

    path = Path(lm_eval.__file__).parent / "tasks" / local.lm_eval_yaml
    if path.is_file():
        return path
    entry = _task_manager().task_index.get(local.task)
    if entry is None or not entry.yaml_path:
        raise ConfigError(f"lm_eval:{local.task}", f"this lm-eval version has no task {local.task!r}")
    return Path(entry.yaml_path)


def build_task(source: TaskSource, limit: int | None = None) -> Any:
    """An lm-eval Task object for ``source``; local data never touches the hub.

    lm-eval's ``limit`` scores the first N examples; a local task reads only those N.
    """
    import datasets
    from lm_eval.api.task import ConfigurableTask

    datasets.disable_progress_bars()

    if source.local is None:
        try:
            return _task_manager().load(source.name)["tasks"][source.name]
        except Exception as exc:
            raise ConfigError(
                f"lm_eval:{source.name}",
                f"cannot load lm-eval task {source.name!r} "
                f"({type(exc).__name__}: {str(exc)[:200]}); offline, give a data "
                f"folder with local files for: {', '.join(local_task_names())}",
            ) from None
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(_stock_yaml(source.local), resolve_func=True)
    if config.get("task") != source.local.task:
        raise ConfigError(
            f"lm_eval:{source.name}",
            f"{source.local.lm_eval_yaml} defines task {config.get('task')!r}, not {source.local.task!r}",
        )
    return ConfigurableTask(config=_local_overrides(config, source, limit))


def _local_overrides(config: dict[str, Any], source: TaskSource, limit: int | None) -> dict[str, Any]:
    """Only the data source changes: the local records become the stock task's evaluation split."""
    import datasets

    eval_split = "test_split" if config.get("test_split") else "validation_split"
    split, reader, files = config[eval_split], READERS[source.local.reader], source.files

    def local_dataset(**_: Any) -> datasets.DatasetDict:
        return datasets.DatasetDict({split: datasets.Dataset.from_list(reader(files)[:limit])})

    return config | {
        "dataset_path": f"local:{source.name}",
        "dataset_name": None,
        "dataset_kwargs": None,
        "custom_dataset": local_dataset,
        "training_split": None,
        "fewshot_split": None,
        "validation_split": None,
        "test_split": None,
        eval_split: split,
    }
