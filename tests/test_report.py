import time

import pytest

from petals import report


def test_stage_timer_sums_every_block_of_a_stage():
    timer = report.StageTimer()
    for _ in range(2):
        with timer.stage("train"):
            time.sleep(0.02)
    assert timer.seconds["train"] >= 0.04
    assert timer.seconds["data"] == 0.0
    assert list(timer.seconds) == list(report.STAGES)


def test_stage_timer_counts_a_block_that_raises():
    timer = report.StageTimer()
    with pytest.raises(RuntimeError, match="out of memory"), timer.stage("predict"):
        time.sleep(0.01)
        raise RuntimeError("out of memory")
    assert timer.seconds["predict"] >= 0.01


def test_stage_timer_moves_seconds_between_stages():
    timer = report.StageTimer()
    timer.seconds["train"] = 10.0
    timer.move(3.0, "train", "compile")
    assert (timer.seconds["train"], timer.seconds["compile"]) == (7.0, 3.0)
    assert "train 7.0" in timer.line() and "compile 3.0" in timer.line()


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="unknown stage 'trian'"):
        with report.StageTimer().stage("trian"):
            pass


def test_summary_line_names_the_score_or_its_absence():
    line = report.summary_line(["tiny", "tiny_wide"], 32, 4, "cpu (1 replica)", 0.91234, 120)
    assert line.startswith("DONE tiny+tiny_wide 32px 4 epochs on cpu (1 replica):")
    assert "0.9123" in line and line.endswith("120 test predictions")
    assert "no validation" in report.summary_line(["tiny"], 32, 4, "cpu", None, 120)
