"""Reading user data files (CSV, JSONL, Parquet; optionally gzip-compressed).

Errors name the file, the line (1-based; the header is line 1 of a CSV) and the column, and say what was expected. Rows with an empty text are skipped and
reported, never silently dropped.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AnswerError, DataError
from ..tasks import TaskConfig

__all__ = ["TextData", "read_texts", "write_rows", "decode_answers"]

csv.field_size_limit(1 << 28)


@dataclass
class TextData:
    """Texts read from a file, with the file row each came from.

    Attributes
    ----------
    texts : list of str
    rows : list of int
        Where each text is in the file: the line it starts on (CSV: the header is line 1;
        JSONL: its line), or its 1-based row index (Parquet).
    labels : list of str or None
        The label (answer) column, when one was asked for: a label, or the JSON text of a
        structured answer (a JSONL or Parquet list or object; an empty list is an answer too).
    skipped : list of (row, reason)
        Rows that were not used, and why.
    columns : list of str
        The file's columns, in its order.
    records : list of dict or None
        With ``keep_records``: each used row's whole record (every column), for outputs that
        carry the input's columns along (``predict``).
    """

    path: Path
    texts: list[str]
    rows: list[int]
    labels: list[str] | None = None
    skipped: list[tuple[int, str]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    records: list[dict[str, object]] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def skipped_summary(self) -> str:
        if not self.skipped:
            return ""
        rows = ", ".join(str(r) for r, _ in self.skipped[:10])  # file lines
        more = f" and {len(self.skipped) - 10} more" if len(self.skipped) > 10 else ""
        reasons = sorted({why for _, why in self.skipped})
        return f"{self.path}: skipped {len(self.skipped)} row(s) ({'; '.join(reasons)}): lines {rows}{more}"


def _suffixes(path: Path) -> list[str]:
    s = [x.lower() for x in path.suffixes]
    return s[:-1] if s and s[-1] == ".gz" else s


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a CSV, JSONL or Parquet file") from None
    if path.suffix.lower() == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a valid gzip file ({exc})") from None
    return raw


def _decode(path: Path, raw: bytes, encoding: str) -> str:
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = raw[exc.start : exc.end].hex(" ")
        raise DataError(
            f"{path}: line {line}, column {col}: bytes {bad} are not valid {encoding}; "
            f"re-save the file as UTF-8, or pass the file's real encoding (e.g. --encoding latin-1)"
        ) from None
    return text.removeprefix("\ufeff")


def _rows(path: Path, encoding: str) -> tuple[list[str], list[tuple[int, dict[str, object]]]]:
    """Column names and (file row, record) pairs for any supported format."""
    fmt = _suffixes(path)
    kind = fmt[-1] if fmt else ""
    if kind in (".csv", ".tsv", ".txt"):
        text = _decode(path, _read_bytes(path), encoding)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if kind == ".tsv" else ",")
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: the file is empty; expected a header row") from None
        out: list[tuple[int, dict[str, object]]] = []
        start = reader.line_num + 1  # a record's first line (quoted fields may span lines)
        try:
            for rec in reader:
                if not rec or all(not c.strip() for c in rec):
                    out.append((start, {}))
                elif len(rec) != len(header):
                    raise DataError(
                        f"{path}: line {start}: {len(rec)} fields, but the header has "
                        f"{len(header)} ({', '.join(header)}); check quoting and delimiters"
                    )
                else:
                    out.append((start, dict(zip(header, rec))))
                start = reader.line_num + 1
        except csv.Error as exc:
            raise DataError(f"{path}: line {start}: malformed CSV: {exc}") from None
        return header, out
    if kind in (".jsonl", ".ndjson", ".json"):
        text = _decode(path, _read_bytes(path), encoding)
        out = []
        cols: dict[str, None] = {}
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                out.append((i, {}))
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {i}: invalid JSON ({exc.msg}); expected one JSON object per line") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}: line {i}: expected a JSON object, got {type(rec).__name__}")
            cols.update(dict.fromkeys(rec))
            out.append((i, rec))
        return list(cols), out
    if kind == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{path}: reading Parquet needs pyarrow: pip install 'downsize[parquet]'") from None
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several unrelated types
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        records = table.to_pylist()
        return table.column_names, [(i + 1, r) for i, r in enumerate(records)]
    raise DataError(f"{path}: unknown file type {''.join(fmt) or '(none)'}; expected .csv, .tsv, .jsonl or .parquet (optionally .gz)")


def read_texts(
    path: str | os.PathLike[str],
    text_col: str = "text",
    *,
    label_col: str | None = None,
    limit: int | None = None,
    encoding: str = "utf-8",
    keep_records: bool = False,
) -> TextData:
    """Read the text column (and optionally a label column) of a data file.

    Raises
    ------
    DataError
        Missing file or column, undecodable bytes, malformed rows: with file, row and column.
    """
    path = Path(path)
    header, records = _rows(path, encoding)
    for col in [text_col] + ([label_col] if label_col else []):
        if col not in header:
            raise DataError(
                f"{path}: no column {col!r}; the file has: {', '.join(map(str, header)) or '(none)'}. "
                f"Pass the right name with --text-col / --label-col"
            )
    data = TextData(path=path, texts=[], rows=[], labels=[] if label_col else None, columns=list(map(str, header)),
                    records=[] if keep_records else None)
    for row, rec in records:
        if limit is not None and len(data.texts) >= limit:
            break
        if not rec:
            data.skipped.append((row, "empty row"))
            continue
        text = rec.get(text_col)
        if text is None or not str(text).strip():
            data.skipped.append((row, f"empty {text_col!r}"))
            continue
        if label_col:
            lab = rec.get(label_col)
            if isinstance(lab, (list, dict)):  # a structured answer (JSONL, Parquet): its JSON text
                data.labels.append(json.dumps(lab, ensure_ascii=False, sort_keys=True))  # type: ignore[union-attr]
            elif lab is None or not str(lab).strip():
                data.skipped.append((row, f"empty {label_col!r}"))
                continue
            else:
                data.labels.append(str(lab).strip())  # type: ignore[union-attr]
        data.texts.append(str(text))
        data.rows.append(row)
        if data.records is not None:
            data.records.append(rec)
    return data


def write_rows(path: str | os.PathLike[str], rows: list[dict[str, object]]) -> Path:
    """Write records as CSV or JSONL (by suffix); used by ``predict -o`` and ``log export``. In CSV a
    list or object value is written as its JSON text."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = (_suffixes(path) or [".csv"])[-1]
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as fh:  # type: ignore[operator]
        if kind in (".jsonl", ".ndjson", ".json"):
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
        elif kind in (".csv", ".tsv"):
            cols = list(dict.fromkeys(k for r in rows for k in r))
            w = csv.DictWriter(fh, fieldnames=cols, delimiter="\t" if kind == ".tsv" else ",")
            w.writeheader()
            for r in rows:  # a structured value (a list, an object) becomes a cell holding its JSON
                w.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                            for k, v in r.items()})
        else:
            raise DataError(f"{path}: unknown output type {kind}; use .csv, .tsv or .jsonl")
    return path


def decode_answers(task: TaskConfig, values: Sequence[str], rows: Sequence[int], path: str) -> list[Any]:
    """The answers a file gives (gold labels, reviews...) as the task's kind reads them.

    Raises
    ------
    DataError
        Naming the file, how many rows do not fit the task, the first few lines and why.
    """
    out, bad = [], []
    for row, value in zip(rows, values, strict=True):
        try:
            out.append(task.decode(value))
        except AnswerError as exc:
            bad.append((row, value, str(exc)))
    if bad:
        names = sorted({v for _, v, _ in bad})[:10]
        where = ", ".join(f"line {r}: {v!r}" for r, v, _ in bad[:5])
        raise DataError(f"{path}: {len(bad)} row(s) have labels not configured for the task: {names} "
                        f"(e.g. {where}): {bad[0][2]}")
    return out
