"""Issue 9, items 4-7: long-tail labels, relative student paths, health and audit of rejected
requests, strict request types, predict keeping the input's columns, calibrate --dry-run/--force.

Real parts only: SQLite files in tmp_path, the replay teacher on loopback, the gateway under
uvicorn (``ServerThread``) or the ASGI app through httpx, real tfidf students on Reuters rows.
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from downsize.cli import app
from downsize.data import read_texts
from downsize.project import Project
from downsize.replay import ReplayServer

REUTERS = Path(__file__).resolve().parents[1] / "src" / "downsize" / "_assets" / "reuters_r8_demo-train.csv.gz"
LABELS = ("earn", "acq", "crude", "trade", "money-fx", "interest", "ship", "grain")
runner = CliRunner()


def _config(url: str, *, extra: str = "") -> str:
    labels = "{" + ", ".join(f"{k}: x" for k in LABELS) + "}"
    return ("store: sqlite:///.downsize/downsize.db\nteachers:\n  default:\n"
            f"    base_url: {url}\n    model: replay\n    price_per_1m_input: 2.5\n    price_per_1m_output: 10\n"
            "    max_concurrency: 16\n    timeout_s: 5\n    max_retries: 1\n"
            f"tasks:\n  news:\n    instructions: Route the story.\n    labels: {labels}\n"
            f"    student: tfidf\n    alpha: 0.05\n{extra}")


def _write(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def reuters() -> tuple[list[str], list[str]]:
    data = read_texts(REUTERS, label_col="label")
    return data.texts, data.labels or []


@pytest.fixture(scope="module")
def replay(reuters: tuple[list[str], list[str]]) -> Iterator[ReplayServer]:
    texts, labels = reuters
    with ReplayServer(dict(zip(texts, labels))) as srv:
        yield srv


def _project(d: Path, url: str, texts: list[str], labels: list[str], *, extra: str = "") -> Path:
    """A project in ``d`` with ``texts`` as gold labels (no teacher needed to train)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "downsize.yaml").write_text(_config(url, extra=extra))
    _write(d / "gold.csv", ["text", "label"], [[t, y] for t, y in zip(texts, labels)])
    with Project.open(d / "downsize.yaml") as p:
        p.add_gold("news", d / "gold.csv")
    return d / "downsize.yaml"


# -- item 5: relative student paths ------------------------------------------------------
def test_a_copied_project_loads_its_own_student_after_the_original_is_deleted(
        tmp_path: Path, reuters: tuple[list[str], list[str]], replay: ReplayServer) -> None:
    texts, labels = reuters
    cfg = _project(tmp_path / "orig", replay.base_url, texts[:1500], labels[:1500])
    with Project.open(cfg) as p:
        p.train("news")
        run, _ = p.calibrate("news")
        sv = p.store.latest_student("news")
    assert run.threshold is not None
    assert not Path(sv.path).is_absolute(), sv.path  # stored relative to the project's home
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    shutil.rmtree(tmp_path / "orig")
    _write(tmp_path / "copy" / "new.csv", ["text"], [[t] for t in texts[1500:1560]])
    with Project.open(tmp_path / "copy" / "downsize.yaml") as p:
        s = p.predict("news", tmp_path / "copy" / "new.csv", tmp_path / "copy" / "out.csv", progress=False)
    assert s.rows == 60 and s.answered_by.get("student", 0) > 0, s.answered_by


def test_an_old_absolute_row_still_loads(tmp_path: Path, reuters: tuple[list[str], list[str]],
                                         replay: ReplayServer) -> None:
    from downsize.store import StudentVersion
    from downsize.training import student_dir

    texts, labels = reuters
    cfg = _project(tmp_path / "p", replay.base_url, texts[:1500], labels[:1500])
    with Project.open(cfg) as p:
        p.train("news")
        home = p.config.home_dir()
        with p.store.session() as s:  # as rows were written before paths became relative
            row = s.query(StudentVersion).one()
            row.path = str(home / row.path)
        sv = p.store.latest_student("news")
        assert Path(sv.path).is_absolute() and student_dir(sv, home) == Path(sv.path)
        p.calibrate("news")
        assert p.cascade("news").student is not None
