"""Real tag names from public code map to the meaning their names give, and never to a wrong one."""

from __future__ import annotations

import os

import pytest

from traindoc import format as fmt
from traindoc.tb.mapping import map_tags

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "real_tags.tsv")


def _fixture(held_out_only: bool = False) -> list[tuple[str, str, str]]:
    rows, held_out = [], False
    with open(FIXTURE, encoding="utf-8") as f:
        for line in f:
            if line.startswith("# held-out"):
                held_out = True
            if line.startswith("#") or not line.strip() or (held_out_only and not held_out):
                continue
            tag, meaning, src = line.rstrip("\n").split("\t")
            rows.append((tag, meaning, src))
    return rows


def category(series: list[str]) -> str:
    """The meaning of the series a tag was mapped to, in the fixture's words."""
    if not series:
        return "other"
    s = series[0]
    if s == fmt.LOSS_RAW:
        return "train_loss"
    if s == fmt.LOSS_EPOCH + "/mean":
        return "train_loss_epoch"
    if s == fmt.TRAIN_ACC:
        return "train_acc"
    if s == fmt.TRAIN_ACC_EPOCH:
        return "train_acc_epoch"
    if s in (fmt.VAL_LOSS, fmt.VAL_ACC):
        return {fmt.VAL_LOSS: "val_loss", fmt.VAL_ACC: "val_acc"}[s]
    if s.startswith(fmt.LR_PREFIX):
        return "lr"
    return "other"


#: a mapping that says less than the fixture (a loss of unknown level) is still right
RIGHT = {"train_loss": {"train_loss", "train_loss_step"}, "train_loss_epoch": {"train_loss_epoch", "train_loss"},
         "train_acc_epoch": {"train_acc_epoch", "train_acc"}}


def test_fixture_is_real_and_broad():
    rows = _fixture()
    assert len(rows) >= 300
    assert len({src for _, _, src in rows if src.isdigit()}) >= 200  # distinct public source files
    assert len(_fixture(held_out_only=True)) >= 90


def _score(rows):
    right, wrong, missed = 0, [], []
    for tag, meaning, src in rows:
        got = category(map_tags([tag])[tag])
        if got == meaning or got in RIGHT.get(meaning, ()) or (meaning == "train_loss_step" and got == "train_loss"):
            right += 1
        elif got == "other":
            missed.append((tag, meaning))
        else:
            wrong.append((tag, meaning, got, src))
    return right, wrong, missed


@pytest.mark.parametrize("part", ["all", "held-out"])
def test_real_tags_map_to_their_meaning_and_never_wrongly(part):
    rows = _fixture(held_out_only=part == "held-out")
    right, wrong, missed = _score(rows)
    print(f"{part}: {right}/{len(rows)} mapped right ({right / len(rows):.1%}); missed: {missed}")
    assert not wrong, wrong  # never a wrong meaning
    assert right / len(rows) >= 0.95, missed
