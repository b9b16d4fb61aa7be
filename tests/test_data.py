"""Reading data files: errors name the file, row and column; empty rows are reported, not lost."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from downsize.data import read_texts, write_rows
from downsize.errors import DataError


def test_csv_with_empty_rows_reports_them(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text('text,label\nhello,a\n,b\n\n"multi\nline",a\n   ,a\n')
    d = read_texts(p, "text", label_col="label")
    assert d.texts == ["hello", "multi\nline"]
    assert d.labels == ["a", "a"]
    assert [r for r, _ in d.skipped] == [3, 4, 7]
    assert "skipped 3 row(s)" in d.skipped_summary()


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("body,label\nx,a\n")
    with pytest.raises(DataError, match=r"d\.csv: no column 'text'; the file has: body, label"):
        read_texts(p, "text")


def test_non_utf8_names_line_and_bytes(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_bytes(b"text\nfine\ncaf\xe9 latte\n")
    with pytest.raises(DataError, match=r"line 3, column 4: bytes e9 are not valid utf-8"):
        read_texts(p, "text")
    assert read_texts(p, "text", encoding="latin-1").texts[-1] == "café latte"


def test_ragged_csv_row(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("text,label\na,b,c\n")
    with pytest.raises(DataError, match="line 2: 3 fields, but the header has 2"):
        read_texts(p, "text")


def test_jsonl_gz_and_bad_line(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(json.dumps({"text": "a", "y": "1"}) + "\n" + json.dumps({"text": "b", "y": "2"}) + "\n")
    assert read_texts(p, "text", label_col="y", limit=1).texts == ["a"]
    q = tmp_path / "e.jsonl"
    q.write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(DataError, match=r"e\.jsonl: line 2: invalid JSON"):
        read_texts(q, "text")


def test_parquet_round_trip(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a", "", "c"], "label": ["x", "y", "z"]}), p)
    d = read_texts(p, "text", label_col="label")
    assert d.texts == ["a", "c"] and d.skipped == [(2, "empty 'text'")]


def test_unknown_type_and_write(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown file type"):
        read_texts(tmp_path / "x.xlsx", "text")
    out = write_rows(tmp_path / "o.csv", [{"a": 1, "b": "x"}])
    assert read_texts(out, "b").texts == ["x"]
