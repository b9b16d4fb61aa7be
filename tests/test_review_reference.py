"""Corrections are gold: reviews feed training, ``reference: human`` calibrates against them once
there are enough, and the report shows the random sample's accuracy against people."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _review_data import config, log_traffic, reuters
from sqlalchemy import select

from downsize.calibration import clopper_pearson, min_calibration_size
from downsize.report import build_report, render_text
from downsize.report.render.cards import guarantee_card, review_card
from downsize.review import ReviewQueue, add_texts, fill_queue, review_summary
from downsize.store import ReviewItem, Store
from downsize.training import calibrate_task, load_student_version, train_task

ALPHA = 0.05


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tfidf student on 400 teacher-labelled Reuters texts, its calibration rows and the answers
    and confidences the calibration uses on them."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = config(tmp, task={"student": "tfidf", "alpha": ALPHA})
    store = Store(cfg.store_url())
    texts, labels = reuters(400)
    ids = store.add_examples("news", texts)
    store.add_labels("news", zip(ids, labels), source="teacher")
    train_task(store, cfg, "news", kind="tfidf")
    sv = store.latest_student("news")
    by_id = {e.example_id: e for e in store.labelled_examples("news")}
    split = [by_id[i] for i in sv.calib_example_ids]
    pred, conf = cfg.tasks["news"].score(load_student_version(sv, cfg.home_dir()), [e.text for e in split])
    oof = sv.metrics.get("oof")
    if oof:  # cross-fitted: the answers the calibration uses are the out-of-fold ones, not the refit's
        by = {i: (a, c) for i, a, c in zip(oof["ids"], oof["answers"], oof["confidence"])}
        pred, conf = [by[e.example_id][0] for e in split], [by[e.example_id][1] for e in split]
    yield tmp, store, split, pred, conf
    store.close()


def _cfg(tmp: Path, reference: str) -> Any:
    return config(tmp, task={"student": "tfidf", "alpha": ALPHA, "reference": reference})


def _review(store: Store, cfg: Any, rows: list[Any], answers: list[str], who: str) -> None:
    add_texts(store, cfg, "news", [e.text for e in rows], source="calib")
    with store.session() as s:
        items = dict(s.execute(select(ReviewItem.text, ReviewItem.id)).all())
    q = ReviewQueue(store, cfg)
    for e, a in zip(rows, answers):
        q.answer(items[e.text], who, how="pick", value=a)


def test_reference_human_uses_people_once_there_are_enough_and_corrections_change_it(trained: Any) -> None:
    tmp, store, split, pred, conf = trained
    need = min_calibration_size(ALPHA, 0.05)
    assert len(split) > need + 40
    base, _ = calibrate_task(store, _cfg(tmp, "teacher"), "news")
    assert base.reference == "teacher" and base.n_calib == len(split)
    assert "with the reference" in base.details["guarantee"]

    # too few human labels: calibrated against the split as it is, and it says so
    human = _cfg(tmp, "human")
    few = split[: need - 10]
    _review(store, human, few, [e.label for e in few], "alice")
    run, _ = calibrate_task(store, human, "news")
    rows = run.details["reference_rows"]
    assert run.reference == "mixed" and not rows["used"] and rows["n_people"] == need - 10
    assert f"only {need - 10} of the {len(split)} calibration rows" in rows["note"]

    # enough: only the people's rows count; agreeing with the teacher everywhere changes nothing else
    rest = split[need - 10 :]
    _review(store, human, rest, [e.label for e in rest], "alice")
    agree, _ = calibrate_task(store, human, "news")
    assert agree.reference == "human" and agree.n_calib == len(split) == agree.details["reference_rows"]["n_people"]
    assert "disagrees with your reviewers" in agree.details["guarantee"]
    assert agree.threshold == base.threshold and agree.errors_answered == base.errors_answered
    card = guarantee_card("news", build_report(store, human)["tasks"]["news"])  # whom the guarantee is against
    assert "the student disagrees with your reviewers on at most" in card

    # a second reviewer corrects the most confident answers the student got "right": the next
    # calibration counts them as errors
    right = sorted((i for i, (e, p) in enumerate(zip(split, pred)) if p == e.label), key=lambda i: -conf[i])[:8]
    flipped = [split[i] for i in right]
    labels = list(human.tasks["news"].labels)
    _review(store, human, flipped, [labels[(labels.index(e.label) + 1) % 4] for e in flipped], "bob")
    fixed, _ = calibrate_task(store, human, "news", force=True)  # it may certify nothing now
    assert fixed.details["agreement_all"] == pytest.approx(agree.details["agreement_all"] - len(right) / len(split))
    assert (fixed.threshold is None or fixed.threshold > agree.threshold
            or fixed.errors_answered > agree.errors_answered)
    # and the next train learns from them: the corrections are the effective labels
    effective = {e.example_id: e for e in store.labelled_examples("news")}
    assert all(effective[e.example_id].source == "human" and effective[e.example_id].label != e.label
               for e in flipped)
    assert "your reviewers" in guarantee_card("news", build_report(store, human)["tasks"]["news"])


def test_the_report_shows_the_random_sample_against_people_apart(tmp_path: Path) -> None:
    cfg = config(tmp_path, task={"review_sample_rate": 0.3})
    with Store(cfg.store_url()) as store:
        texts, labels = reuters(200)
        tr = log_traffic(store, texts, labels)
        fill_queue(store, cfg, "news")
        q = ReviewQueue(store, cfg)
        served = {r.input_text: (r.answer, r.answered_by) for r in tr.answered}
        k = n = k_st = n_st = 0
        while (it := q.next_item("news", "alice")) is not None:
            sample = any(r["reason"] == "sample" for r in it["reasons"])
            wrong = sample and n % 3 == 0  # a third of the sampled answers are wrong, per the reviewer
            answer = served[it["text"]][0] if sample else (it["teacher"] or it["student"] or {"answer": "earn"})["answer"]
            if wrong:
                answer = "trade" if answer != "trade" else "earn"
            q.answer(it["id"], "alice", how="pick", value=answer)
            if sample:
                n, k = n + 1, k + (not wrong)
                if served[it["text"]][1] == "student":
                    n_st, k_st = n_st + 1, k_st + (not wrong)
        assert n > 20 and n_st > 5
        rv = review_summary(store, cfg, "news")
        sm = rv["sample"]
        assert (sm["n"], sm["agree"], sm["reviewed"]) == (n, k, n)
        assert (sm["lo"], sm["hi"]) == clopper_pearson(k, n, 0.95) and sm["lo"] < k / n < sm["hi"]
        assert (sm["student"]["n"], sm["student"]["agree"]) == (n_st, k_st)
        assert rv["targeted"]["reviewed"] > 0 and rv["queue"]["open"] == 0
        report = build_report(store, cfg)
        t = report["tasks"]["news"]["review"]
        assert t["sample"]["accuracy"] == pytest.approx(k / n)
        html, text = review_card("news", report["tasks"]["news"]), render_text(report)
        assert 'data-metric="review.sample.accuracy"' in html and "Reviewed by people" in html
        assert f"({k}/{n}," in text and "reviewed sample" in text
