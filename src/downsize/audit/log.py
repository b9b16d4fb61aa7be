"""Reading the audit log back: ``downsize log tail`` / ``log export``, and the ``--since`` parser."""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ..errors import DataError
from ..store import RequestLog, Store, utcnow
from .record import LOG_COLUMNS

__all__ = ["read_log", "export_log", "parse_since", "parse_duration"]


_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.I)
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """A span such as ``90s``, ``15m``, ``2h``, ``7d``, ``2w``, ``1.5d`` → :class:`~datetime.timedelta`.

    >>> parse_duration("7d")
    datetime.timedelta(days=7)

    Raises
    ------
    ValueError
        For anything else, quoting the text.
    """
    m = _SPAN.match(text or "")
    if not m:
        raise ValueError(f"cannot read {text!r} as a duration: use a number and s, m, h, d or w (e.g. 7d)")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """``--since`` (``log export``, ``report``): an ISO date/time (UTC) or a span back from now
    (``90s``, ``15m``, ``2h``, ``7d``; see :func:`parse_duration`).

    Raises
    ------
    DataError
        For anything else, quoting the value.
    """
    try:
        return (now or utcnow()) - parse_duration(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DataError(
            f"--since {value!r}: expected an ISO date/time like 2026-05-01 or 2026-05-01T12:00, "
            "or a span like 30m, 2h, 7d"
        ) from None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt


def _row_dict(r: RequestLog) -> dict[str, Any]:
    return {c: getattr(r, c) for c in LOG_COLUMNS}


def read_log(store: Store, *, task: str | None = None, since: datetime | None = None,
             after_id: int | None = None, last: int | None = None) -> list[dict[str, Any]]:
    """Audit rows, oldest first: all after ``after_id``/``since``, or only the ``last`` n."""
    q = select(RequestLog)
    if task is not None:
        q = q.where(RequestLog.task == task)
    if since is not None:
        q = q.where(RequestLog.ts >= since)
    if after_id is not None:
        q = q.where(RequestLog.id > after_id)
    if last is not None:
        q = q.order_by(RequestLog.id.desc()).limit(last)
    else:
        q = q.order_by(RequestLog.id)
    with store.session() as s:
        rows = [_row_dict(r) for r in s.scalars(q)]
    if last is not None:
        rows.reverse()
    return rows


def _iter_log(store: Store, *, task: str | None, since: datetime | None, chunk: int) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        q = select(RequestLog).where(RequestLog.id > after)
        if task is not None:
            q = q.where(RequestLog.task == task)
        if since is not None:
            q = q.where(RequestLog.ts >= since)
        with store.session() as s:
            rows = [_row_dict(r) for r in s.scalars(q.order_by(RequestLog.id).limit(chunk))]
        if not rows:
            return
        yield from rows
        after = rows[-1]["id"]


def export_log(store: Store, path: str | Path, *, task: str | None = None, since: datetime | None = None,
               chunk: int = 5000) -> int:
    """Write the audit log to CSV/TSV or JSONL (by suffix, optionally ``.gz``), streaming; returns rows.

    CSV/TSV cells have NUL characters removed (see :func:`_csv_cell`); JSONL keeps every character.

    Raises
    ------
    DataError
        For an output suffix other than .csv, .tsv, .jsonl, .ndjson (each optionally .gz).
    """
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    kind = (suffixes[:-1] if gz else suffixes)[-1:] or [""]
    kind_s = kind[0]
    if kind_s not in (".csv", ".tsv", ".jsonl", ".ndjson"):
        raise DataError(f"{path}: unknown output type {kind_s or '(none)'}; use .csv, .tsv or .jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    opener: Any = gzip.open if gz else open
    n = 0
    with opener(path, "wt", encoding="utf-8", newline="") as fh:
        rows = _iter_log(store, task=task, since=since, chunk=chunk)
        if kind_s in (".jsonl", ".ndjson"):
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n")
                n += 1
        else:
            w = csv.DictWriter(fh, fieldnames=list(LOG_COLUMNS), delimiter="\t" if kind_s == ".tsv" else ",")
            w.writeheader()
            for r in rows:
                w.writerow({k: _csv_cell(v) for k, v in r.items()})
                n += 1
    return n


def _csv_cell(v: Any) -> Any:
    """A value as a CSV/TSV cell: datetimes in ISO form; NUL characters removed from text.

    A NUL in a CSV file truncates the row for many readers (C-string based tools, some
    spreadsheet imports) and ``csv.reader`` refuses it outright ("line contains NUL"), so CSV and
    TSV exports drop it; JSONL keeps the text exactly (``\\u0000``).
    """
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, str) and "\x00" in v:
        return v.replace("\x00", "")
    return v


def _json_default(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else str(v)
