"""Tests for drn_tf.progress: a bar written to a log is plain lines, its first and last state."""

from __future__ import annotations

from helpers import assert_plain

from drn_tf.progress import Bar


def test_a_bar_written_to_a_log_shows_its_first_and_last_state_only(capsys):
    for _ in Bar(range(500), desc="work", mininterval=0):  # mininterval: a caller's own
        pass
    err = capsys.readouterr().err
    assert_plain(err)
    assert err.splitlines()[-1].startswith("work: 100%")
    for _ in Bar(range(500), desc="work"):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "0/500" in lines[0] and "500/500" in lines[1], lines
