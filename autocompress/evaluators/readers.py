"""Readers that turn local task files into the records (fields) lm-eval's stock task expects.

Each reader gets the task's named files (already resolved to paths) and returns one dict per
example, shaped like the hub dataset that lm-eval's task definition was written for.
"""

from __future__ import annotations

import bz2
import json
from collections.abc import Callable
from pathlib import Path

Reader = Callable[[dict[str, Path]], list[dict]]
READERS: dict[str, Reader] = {}


def reader(fn: Reader) -> Reader:
    READERS[fn.__name__] = fn
    return fn


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@reader
def jsonl(files: dict[str, Path]) -> list[dict]:
    """Records as they are (lambada_openai, winogrande)."""
    return _jsonl(files["docs"])


@reader
def jsonl_labels(files: dict[str, Path]) -> list[dict]:
    """Records plus an integer ``label`` per line of a separate labels file (PIQA)."""
    docs = _jsonl(files["docs"])
    labels = files["labels"].read_text().split()
    if len(labels) != len(docs):
        raise ValueError(f"{files['labels']} has {len(labels)} labels for {len(docs)} records")
    return [doc | {"label": int(label)} for doc, label in zip(docs, labels)]


@reader
def arc(files: dict[str, Path]) -> list[dict]:
    """ARC's original nested form -> the hub's ``question`` / ``choices{text,label}`` / ``answerKey``."""
    out = []
    for doc in _jsonl(files["docs"]):
        choices = doc["question"]["choices"]
        out.append(
            {
                "id": doc["id"],
                "question": doc["question"]["stem"],
                "answerKey": doc["answerKey"],
                "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
            }
        )
    return out


@reader
def boolq_superglue(files: dict[str, Path]) -> list[dict]:
    """SuperGLUE BoolQ with "true"/"false" labels -> the hub's integer label (1 = yes)."""
    truth = {"true": 1, "false": 0, True: 1, False: 0}
    return [
        {"question": d["question"], "passage": d["passage"], "label": truth[d["label"]]} for d in _jsonl(files["docs"])
    ]


@reader
def hellaswag_text(files: dict[str, Path]) -> list[dict]:
    """llama.cpp's HellaSwag text form (6 lines: context, gold index, 4 endings) -> hub fields.

    The context line is ``activity_label + ": " + ctx``; lm-eval's ``process_docs`` rebuilds
    exactly that string from ``activity_label``, ``ctx_a`` and ``ctx_b``.
    """
    path = files["docs"]
    text = bz2.decompress(path.read_bytes()).decode("utf-8") if path.suffix == ".bz2" else path.read_text("utf-8")
    lines = text.splitlines()
    if len(lines) % 6:
        raise ValueError(f"{path}: {len(lines)} lines is not a multiple of 6")
    out = []
    for i in range(0, len(lines), 6):
        label, _, ctx = lines[i].partition(": ")
        out.append(
            {
                "activity_label": label,
                "ctx_a": ctx,
                "ctx_b": "",
                "label": lines[i + 1].strip(),
                "endings": lines[i + 2 : i + 6],
            }
        )
    return out
