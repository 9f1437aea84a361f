"""The evaluation kinds' registry: every kind has every piece plan, execute, the store and the report read, and
those layers find the kinds there (a kind missing from the registry is unknown to all of them)."""
from __future__ import annotations

import dataclasses

import pytest

from questbench.kinds import KINDS, kind
from questbench.errors import QuestbenchError
from questbench.report.sections import HEADLINE_KINDS


def test_every_registered_kind_has_every_piece():
    assert list(KINDS)[:6] == ["clean", "shift", "corruption", "attack", "check", "diagnostics"]
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
