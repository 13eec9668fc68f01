"""Progress off a terminal: whole lines, one per interval, then the last; a short loop prints none."""

import io

import pytest

from comit.progress import LineProgress, progress


def test_off_a_terminal_a_loop_shorter_than_the_interval_is_silent(monkeypatch):
    monkeypatch.setenv("COMIT_PROGRESS_SECONDS", "1000")
    log = io.StringIO()
    bar = progress(total=50, desc="tokenize", unit="batch", file=log)
    assert isinstance(bar, LineProgress)
    for _ in range(50):
        bar.update(1)
        bar.set_postfix(loss=0.5)  # a postfix refresh adds no line
    bar.close()
    assert log.getvalue() == ""


def test_lines_come_every_interval(monkeypatch):
    monkeypatch.setenv("COMIT_PROGRESS_SECONDS", "10")
    clock = iter(range(0, 10_000, 4))  # every call: 4 more "seconds"
    log = io.StringIO()
    bar = LineProgress(total=20, desc="train", unit="step", file=log, mininterval=10, maxinterval=10,
                       bar_format="{desc}: {n}/{total}")
    bar._time = lambda: next(clock)
    bar.start_t = bar.last_print_t = bar._printed_at = 0
    for _ in range(20):
        bar.update(1)
    bar.close()
    counts = [int(line.split(": ")[1].split("/")[0]) for line in log.getvalue().splitlines()]
    assert counts[-1] == 20 and 3 <= len(counts) <= 12
    assert counts == sorted(set(counts))


def test_disabled_progress_prints_nothing():
    log = io.StringIO()
    for _ in progress(range(3), desc="x", enabled=False, file=log):
        pass
    assert log.getvalue() == ""


def test_a_bad_interval_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("COMIT_PROGRESS_SECONDS", "soon")
    with pytest.raises(ValueError, match="COMIT_PROGRESS_SECONDS must be a number of seconds, got 'soon'"):
        progress(total=3, desc="x", file=io.StringIO())
