"""Read the LLM traffic logs teams already have into typed :class:`LogRecord` rows.

Formats (``FORMATS``; :func:`detect_format` picks one per file, ``format=`` overrides):

``openai_batch``
    OpenAI Batch API files: input lines ``{custom_id, method, url, body}`` and output lines
    ``{id, custom_id, response: {status_code, request_id, body}, error}``, joined on
    ``custom_id`` across every file given (output lines come back in any order). Chat
    completions (``/v1/chat/completions``) and the Responses API (``/v1/responses``) bodies.
    Records carry ``batch=True``: the Batch API is billed at half the list price.
``chat_pairs``
    JSON Lines of ``{"request": <chat.completions request>, "response": <chat.completion>}``,
    optionally with ``latency_ms`` and ``timestamp``/``ts`` (ISO 8601 or Unix seconds).
``litellm``
    LiteLLM's ``LiteLLM_SpendLogs`` rows as JSON (the ``/spend/logs`` list, a ``/spend/logs/v2``
    page ``{"data": [...]}``), JSON Lines, or CSV (a table dump such as psql's ``\\copy ... CSV
    HEADER``; JSON columns as JSON text). Prompts are only there with
    ``general_settings.store_prompts_in_spend_logs: true``: the request is read from
    ``messages``, else the ``proxy_server_request`` column, else ``metadata.proxy_server_request``
    (where the versions of LiteLLM put it); the answer from ``response``.
``downsize``
    downsize's own gateway log: ``request_log`` rows of pass-through requests (``task IS NULL``,
    ``answered_by = 'passthrough'``), from a store (``sqlite:///...`` URL or a ``.db`` file,
    opened read-only) or a ``downsize log export`` JSONL/CSV. Texts are only there with
    ``server.log_passthrough_text: true``; only the last user message is logged (no system
    prompt), so templates are told apart by the user-message wrapper alone.

Bad lines never stop a read: each is counted and reported with its line number in
:class:`FileReport`; rows that are valid but unusable (a failed request, no stored prompt) are
counted in the file's notes.
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..errors import DataError
from . import _formats as F
from ._records import BadLine, BadRow, FileReport, LogRead, LogRecord, ReadReport

__all__ = [
    "FORMATS",
    "BadLine",
    "FileReport",
    "LogRead",
    "LogRecord",
    "ReadReport",
    "detect_format",
    "read_logs",
    "records_from_audit_rows",
]

FORMATS = ("openai_batch", "chat_pairs", "litellm", "downsize")
_DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_SNIFF_LINES = 20


# -- opening and detecting ---------------------------------------------------------------
def _is_db(path: str) -> bool:
    return path.startswith("sqlite:") or Path(path).suffix.lower() in _DB_SUFFIXES


def _kind_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")  # type: ignore[return-value]
    return open(path, encoding="utf-8", errors="replace", newline="")


def _classify_row(obj: Any) -> str | None:
    """Which format a first JSON object belongs to, from its keys."""
    if not isinstance(obj, dict):
        return None
    keys = set(obj)
    if "custom_id" in keys and ({"body", "url", "method"} & keys or {"response", "error"} & keys):
        return "openai_batch"
    if "answered_by" in keys and "input_hash" in keys:
        return "downsize"
    if "request_id" in keys and keys & {"call_type", "spend", "startTime", "prompt_tokens", "proxy_server_request"}:
        return "litellm"
    if "request" in keys and "response" in keys:
        return "chat_pairs"
    return None


def detect_format(path: str | Path) -> str:
    """The format of one log file (see the module docstring), from its name and first rows.

    Raises
    ------
    DataError
        When the file is missing or its rows match no known format (naming the keys seen).
    """
    p = str(path)
    if _is_db(p):
        return "downsize"
    path = Path(p)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    kind = _kind_suffix(path)
    with _open_text(path) as fh:
        if kind in (".csv", ".tsv"):
            header = next(csv.reader(fh, delimiter="\t" if kind == ".tsv" else ","), [])
            fmt = _classify_row({h: None for h in header})
            if fmt in ("litellm", "downsize"):
                return fmt
            raise DataError(f"{path}: CSV columns {header[:12]} match no log format "
                            f"(LiteLLM spend logs need request_id and spend/startTime; a downsize log export "
                            f"needs answered_by and input_hash)")
        head = fh.read(1 << 16)
    stripped = head.lstrip()
    if stripped.startswith("["):
        data = _load_json(path)
        first = data[0] if isinstance(data, list) and data else None
        fmt = _classify_row(first)
        if fmt:
            return fmt
        raise DataError(f"{path}: a JSON array whose first item {_keys(first)} matches no log format")
    seen = None
    for line in head.splitlines()[:_SNIFF_LINES]:
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("data"), list):  # a /spend/logs/v2 page
            return "litellm"
        fmt = _classify_row(obj)
        if fmt:
            return fmt
        seen = obj if seen is None else seen
    if stripped.startswith("{") and seen is None:  # one pretty-printed JSON object
        obj = _load_json(path)
        if isinstance(obj, dict) and isinstance(obj.get("data"), list):
            return "litellm"
    raise DataError(f"{path}: no row in the first {_SNIFF_LINES} lines matches a log format (first row keys: "
                    f"{_keys(seen)}); pass format= one of {', '.join(FORMATS)}")


def _keys(obj: Any) -> str:
    return str(sorted(obj)[:12]) if isinstance(obj, dict) else type(obj).__name__


def _load_json(path: Path) -> Any:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as fh:
        try:
            return orjson.loads(fh.read())
        except orjson.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON: {exc}") from None


# -- reading -----------------------------------------------------------------------------------
def _json_rows(path: Path, rep: FileReport) -> Iterator[tuple[int, Any]]:
    """``(line, object)`` for each JSON row: JSON Lines, a JSON array, or a ``{"data": [...]}`` page.

    A whole-file JSON document that does not parse is one bad line (line 1), not an error.
    """
    with _open_text(path) as fh:
        head = fh.read(1 << 12).lstrip()
    if head.startswith("["):
        rep.unit = "item"
        try:
            data = _load_json(path)
        except DataError as exc:
            rep.lines = 1
            rep.add_bad(1, str(exc).split(": ", 1)[-1])
            return
        rep.lines = len(data) if isinstance(data, list) else 1
        yield from enumerate(data if isinstance(data, list) else [data], 1)
        return
    with _open_text(path) as fh:
        for n, line in enumerate(fh, 1):
            rep.lines = n
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if n == 1 and head.startswith("{"):  # perhaps a pretty-printed /spend/logs/v2 page
                    try:
                        page = _load_json(path)
                    except DataError:
                        page = None
                    if isinstance(page, dict):
                        data = page.get("data") if isinstance(page.get("data"), list) else [page]
                        rep.unit, rep.lines = "item", len(data)
                        yield from enumerate(data, 1)
                        return
                rep.add_bad(n, f"not JSON ({str(exc).split(':')[0]})")
                continue
            if isinstance(obj, dict) and isinstance(obj.get("data"), list) and "request_id" not in obj:
                for obj2 in obj["data"]:
                    yield n, obj2
            else:
                yield n, obj


def _csv_rows(path: Path, rep: FileReport) -> Iterator[tuple[int, Any]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    delim = "\t" if _kind_suffix(path) == ".tsv" else ","
    with _open_text(path) as fh:
        reader = csv.DictReader(fh, delimiter=delim)
        for row in reader:
            rep.lines = reader.line_num
            if None in row:
                rep.add_bad(reader.line_num, f"{len(row[None]) + len(row) - 1} fields, header has {len(row) - 1}")
                continue
            yield reader.line_num, row


def _rows(path: Path, rep: FileReport) -> Iterator[tuple[int, Any]]:
    return _csv_rows(path, rep) if _kind_suffix(path) in (".csv", ".tsv") else _json_rows(path, rep)


def read_logs(paths: str | Path | Sequence[str | Path], *, format: str = "auto",
              max_listed: int = 20) -> LogRead:
    """Read log files (or a downsize store) into records, never failing on a bad line.

    Parameters
    ----------
    paths : path or sequence of paths
        Log files; ``sqlite:///...`` URLs or ``.db`` files are downsize stores. OpenAI Batch
        input and output files are joined on ``custom_id`` across all the paths given.
    format : {"auto", "openai_batch", "chat_pairs", "litellm", "downsize"}, default="auto"
        ``auto`` detects each file's format (:func:`detect_format`).
    max_listed : int, default=20
        Bad lines listed by number per file (all are counted).

    Returns
    -------
    LogRead
        ``records`` in file order (batch records in input order) and the ``report``.

    Raises
    ------
    DataError
        For a missing file, an unknown ``format``, or a file whose format cannot be detected.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if format != "auto" and format not in FORMATS:
        raise DataError(f"format must be 'auto' or one of {', '.join(FORMATS)}, got {format!r}")
    report = ReadReport()
    records: list[LogRecord] = []
    batch = F.BatchJoin()
    for p in paths:
        fmt = format if format != "auto" else detect_format(p)
        rep = FileReport(path=str(p), format=fmt, max_listed=max_listed)
        report.files.append(rep)
        if fmt == "downsize" and _is_db(str(p)):
            records.extend(F.read_store(str(p), rep))
            continue
        path = Path(p)
        if not path.exists():
            raise DataError(f"{path}: no such file")
        if fmt == "openai_batch":
            batch.add_file(path.name, _rows(path, rep), rep)
        else:
            parse = F.ROW_PARSERS[fmt]
            for line, obj in _rows(path, rep):
                rec = _parse(parse, obj, f"{path.name}:{line}", line, rep)
                if rec is not None:
                    records.append(rec)
                    rep.records += 1
    records.extend(batch.records())
    for rep in report.files:
        F.add_notes(rep)
    return LogRead(records, report)


def _parse(parse: Any, obj: Any, source: str, line: int, rep: FileReport) -> LogRecord | None:
    try:
        return parse(obj, source, rep)
    except BadRow as exc:
        rep.add_bad(line, str(exc))
        return None


def records_from_audit_rows(rows: Iterable[dict[str, Any]], *, source: str = "request_log") -> LogRead:
    """Records from ``request_log`` row dicts (e.g. :func:`downsize.audit.read_log`): pass-through only."""
    rep = FileReport(path=source, format="downsize")
    out = []
    for i, row in enumerate(rows, 1):
        rep.lines = i
        rec = _parse(F.parse_downsize, row, f"{source}:{row.get('id', i)}", i, rep)
        if rec is not None:
            out.append(rec)
            rep.records += 1
    F.add_notes(rep)
    return LogRead(out, ReadReport([rep]))

