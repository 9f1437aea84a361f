"""The evaluation kinds' registry: every kind has every piece plan, execute, the store and the report read, and
those layers find the kinds there (a kind missing from the registry is unknown to all of them)."""
from __future__ import annotations

import dataclasses

import pytest

from questbench.kinds import KINDS, kind
from questbench.errors import QuestbenchError
from questbench.report.sections import HEADLINE_KINDS


def test_every_registered_kind_has_every_piece():
    assert list(KINDS) == ["clean", "shift", "corruption", "calibration", "attack", "check", "diagnostics"]
    problems = {name: k.missing(HEADLINE_KINDS) for name, k in KINDS.items()}
    assert all(not p for p in problems.values()), problems


@pytest.mark.parametrize("piece, value", [("plan", None), ("execute", None), ("label", ""), ("record", dict),
                                          ("samples_of", None)])
def test_a_kind_missing_a_piece_is_named(piece, value):
    broken = dataclasses.replace(KINDS["clean"], name="new", **{piece: value})
    assert piece in broken.missing(HEADLINE_KINDS)


def test_a_kind_deriving_rows_from_other_kinds_runs_after_them_and_says_what_it_derives():
    order = list(KINDS)
    for name, k in KINDS.items():
        assert all(order.index(source) < order.index(name) for source in k.from_logits_of), name
    assert KINDS["calibration"].from_logits_of == ("clean", "corruption")
    assert "logit_fields" in dataclasses.replace(KINDS["calibration"], logit_fields=None).missing(HEADLINE_KINDS)


def test_a_kind_without_tables_of_its_own_is_named_unless_the_report_tabulates_it():
    assert dataclasses.replace(KINDS["clean"], name="new").missing(HEADLINE_KINDS) == ["tables"]
    assert KINDS["clean"].missing(HEADLINE_KINDS) == []


def test_the_layers_read_kinds_from_the_registry():
    from questbench.run.plan import KINDS as RUN_ORDER, ATTACK_KINDS
    from questbench.store.results import JobInfo

    assert RUN_ORDER == tuple(KINDS)
    assert set(ATTACK_KINDS) == {n for n, k in KINDS.items() if k.drawn}
    header = dict(format=3, model="m", attention="standard", pair="", setting="s", samples=1, key_sha256="k",
                  suite_sha256="s", flags=[])
    for name in KINDS:
        JobInfo.model_validate(header | {"evaluation": name})
    with pytest.raises(Exception, match="unknown evaluation kind"):
        JobInfo.model_validate(header | {"evaluation": "nonsense"})
    with pytest.raises(QuestbenchError, match="unknown evaluation kind 'nonsense'"):
        kind("nonsense")


def test_derived_rows_come_back_exactly_and_only_when_every_image_was_kept():
    from questbench.kinds.base import Derived

    d = Derived(KINDS["calibration"], {("m", "s")})
    rows = [{"sample_id": f"i{k}", "label": k, "pred": 9 - k, "correct": k == 9 - k, "confidence": 0.1 * k + 1e-17,
             "p_true": 0.3, "nll": 1.2039728043259361, "brier": 0.7} for k in range(10)]
    assert d.extra("clean") is not None and d.extra("shift") is None
    stripped = d.keep("corruption", "m", "s", rows[:6]) + d.keep("corruption", "m", "s", rows[6:])
    assert stripped == [{k: r[k] for k in ("sample_id", "label", "pred", "correct")} for r in rows]
    assert d.keep("corruption", "other", "s", rows[:2]) and ("other", "s") not in d.kept  # not wanted: not kept
    assert d.take("m", "s", ["i1", "i99"]) is None  # one image was never kept: the kind computes them itself
    assert d.take("m", "s", ["i3", "i7"]) == [rows[3], rows[7]]  # types and values as they were computed
    assert ("m", "s") in d.kept
    assert d.take("m", "s", [r["sample_id"] for r in rows]) == rows and ("m", "s") not in d.kept
