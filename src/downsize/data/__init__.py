"""The data: files in (CSV, TSV, JSONL, Parquet; errors naming file, row and column) and the
teacher labelling them into the store.

* :mod:`.files`: :func:`read_texts` / :func:`write_rows`;
* :mod:`.labeling`: :func:`label_file` / :func:`label_texts`: resumable, budgeted, with progress, paid once
  across processes; :mod:`.summary`: :class:`LabelSummary` and ``downsize label``'s exit codes.
"""

from __future__ import annotations

from .files import TextData, decode_answers, read_texts, write_rows
from .labeling import LabelSummary, label_file, label_texts
from .summary import EXIT_CODES

__all__ = ["TextData", "decode_answers", "read_texts", "write_rows", "LabelSummary", "label_file", "label_texts", "EXIT_CODES"]
