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


# -- item 4: long-tail labels -----------------------------------------------------------------
#: A news-routing set with a long tail: the four big desks as they come, three labels with 1-4 rows.
TAIL = {"ship": 4, "interest": 2, "grain": 1}


def _long_tail(texts: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
    keep: list[tuple[str, str]] = []
    seen: Counter[str] = Counter()
    for t, y in zip(texts[:1500], labels[:1500]):
        if y in TAIL and seen[y] >= TAIL[y]:
            continue
        seen[y] += 1
        keep.append((t, y))
    assert {y: seen[y] for y in TAIL} == TAIL
    return [t for t, _ in keep], [y for _, y in keep]


@pytest.fixture(scope="module")
def tail_project(tmp_path_factory: pytest.TempPathFactory, reuters: tuple[list[str], list[str]],
                 replay: ReplayServer) -> Path:
    texts, labels = _long_tail(*reuters)
    return _project(tmp_path_factory.mktemp("tail"), replay.base_url, texts, labels)


def test_train_leaves_rare_labels_to_the_teacher_and_says_so(tail_project: Path) -> None:
    r = runner.invoke(app, ["train", "news", "--config", str(tail_project)], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output  # before: "too few examples for label(s) 'grain': 1, ..." and exit 1
    assert "teacher-only labels" in r.output
    for lab, n in TAIL.items():
        assert f"{lab} ({n} example(s), fewer than min_examples_per_label=5)" in r.output, r.output
    with Project.open(tail_project) as p:
        sv = p.store.latest_student("news")
        assert set(sv.metrics["teacher_only"]) == set(TAIL)  # the version records them, and why
        assert set(sv.labels).isdisjoint(TAIL)  # the student cannot give them
        by_id = {e.example_id: e.label for e in p.store.labelled_examples("news")}
        in_cal = Counter(by_id[i] for i in sv.calib_example_ids)
        rows = sv.metrics["teacher_only_rows"]
        assert rows["calibration"] == sum(in_cal[lab] for lab in TAIL) >= 1  # the rare rows stay in the split
        assert rows["calibration"] + rows["not_trained_on"] == sum(TAIL.values())
        assert sv.n_train + sv.n_calib + rows["not_trained_on"] == len(by_id)


def test_calibration_counts_student_answers_on_teacher_only_texts_as_errors(tail_project: Path) -> None:
    from downsize.training import load_student_version

    with Project.open(tail_project) as p:
        if p.store.latest_student("news") is None:
            p.train("news")
        run, _ = p.calibrate("news")
        sv = p.store.latest_student("news")
        student = load_student_version(sv, p.config.home_dir())
        by_id = {e.example_id: e for e in p.store.labelled_examples("news")}
        split = [by_id[i] for i in sorted(sv.calib_example_ids)]
        task = p.config.task("news")
        pred, conf = task.score(student, [e.text for e in split])
    rare = [i for i, e in enumerate(split) if e.label in TAIL]
    assert run.details["teacher_only"] == {"labels": sorted(TAIL), "rows": len(rare)} and rare
    assert run.n_calib == len(split)  # nothing dropped from the calibration
    assert all(pred[i] not in TAIL for i in range(len(split)))
    if run.threshold is not None:  # the errors the run counts include every answered rare row
        answered = [i for i in range(len(split)) if conf[i] >= run.threshold]
        wrong = sum(pred[i] != split[i].label for i in answered)
        assert run.errors_answered == wrong and run.n_answered == len(answered)


def test_min_examples_per_label_is_still_the_knob(tmp_path: Path, reuters: tuple[list[str], list[str]],
                                                  replay: ReplayServer) -> None:
    texts, labels = _long_tail(*reuters)
    cfg = _project(tmp_path, replay.base_url, texts, labels, extra="    min_examples_per_label: 2\n")
    with Project.open(cfg) as p:
        r = p.train("news")
    assert set(r.teacher_only) == {"grain", "interest"} and r.teacher_only_rows == 3
    assert "fewer than 2 would be left to train on" in r.teacher_only["interest"]  # 2 rows: 1 to train on
    assert r.label_counts["ship"] == 4


def test_too_few_trainable_labels_is_still_a_clear_error(tmp_path: Path, reuters: tuple[list[str], list[str]],
                                                         replay: ReplayServer) -> None:
    from downsize.errors import StudentError

    texts, labels = reuters
    pick = [(t, y) for t, y in zip(texts, labels) if y == "earn"][:40] + \
        [(t, y) for t, y in zip(texts, labels) if y == "acq"][:3]
    cfg = _project(tmp_path, replay.base_url, [t for t, _ in pick], [y for _, y in pick])
    with Project.open(cfg) as p, pytest.raises(StudentError, match=r"left to the teacher: 'acq' \(3 example"):
        p.train("news")
