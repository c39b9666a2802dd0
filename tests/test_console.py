"""Tests for drn_tf.console: the command runner, and TensorFlow's log lines held back."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys

import pytest

from drn_tf.console import run_command, without_tensorflow_log_lines
from drn_tf.flags import UsageError, setting


@dataclasses.dataclass
class Example:
    """Does an example thing."""

    batch_size: int = setting(32, "Batch size.")
    rate: float = setting(0.5, "A rate.")


def test_run_command_success_gets_the_config(capsys):
    seen = []
    status = run_command(
        "prog", Example, lambda c, p: seen.append((c, p)), ["x", "--rate", "2"], "X"
    )
    assert status == 0 and seen == [(Example(rate=2.0), ["x"])]


def test_run_command_shows_warnings_in_one_line_each(capsys):
    import warnings

    import numpy as np

    def noisy(config, positionals):
        warnings.simplefilter("always")
        warnings.warn("first part\n  second part", UserWarning, stacklevel=1)
        np.log(np.array([-1.0]))  # numpy's RuntimeWarning, with a source line by default

    before = warnings.showwarning
    assert run_command("prog", Example, noisy, []) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "prog: warning: first part second part (UserWarning)",
        "prog: warning: invalid value encountered in log (RuntimeWarning)",
    ]
    assert warnings.showwarning is before  # put back afterwards


def test_run_command_help_is_exit_0(capsys):
    assert run_command("prog", Example, lambda c, p: None, ["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: prog")


@pytest.mark.parametrize("argv", [["--batch-size", "x"], ["unexpected"]])
def test_run_command_usage_error_is_one_line_and_a_hint(argv, capsys):
    ran = []
    assert run_command("prog", Example, lambda c, p: ran.append(c), argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("prog: ") and lines[1] == "(see prog --help)"
    assert ran == []


@pytest.mark.parametrize(
    "error", [ValueError("a.png: bad"), FileNotFoundError("a.png: missing"), ImportError("no x")]
)
def test_run_command_library_error_is_one_line_exit_1(error, capsys):
    def fail(config, positionals):
        raise error

    assert run_command("prog", Example, fail, []) == 1
    assert capsys.readouterr().err.strip() == f"prog: error: {error}"


def test_run_command_usage_error_from_the_function_is_exit_2(capsys):
    def fail(config, positionals):
        raise UsageError("--name is required")

    assert run_command("prog", Example, fail, []) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "prog: --name is required",
        "(see prog --help)",
    ]


def test_run_command_ctrl_c_is_one_line_exit_130(capsys):
    def interrupted(config, positionals):
        raise KeyboardInterrupt

    assert run_command("prog", Example, interrupted, [], interrupted="stopped; rerun") == 130
    assert capsys.readouterr().err.strip() == "prog: stopped; rerun"


def test_run_command_sigterm_is_like_ctrl_c(capsys):
    reached = []

    def terminated(config, positionals):
        os.kill(os.getpid(), signal.SIGTERM)
        reached.append("after the signal")  # not reached: the handler raises first

    before = signal.getsignal(signal.SIGTERM)
    assert run_command("prog", Example, terminated, []) == 130
    assert reached == []
    assert capsys.readouterr().err.strip() == "prog: interrupted"
    assert signal.getsignal(signal.SIGTERM) is before  # restored


def test_tensorflow_log_lines_are_held_back_and_the_rest_passed_on(capfd):
    with without_tensorflow_log_lines():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are ...\n")
        os.write(2, b"I0000 00:00:1795694956.969725    5169 port.cc:153] oneDNN custom ...\n")
        os.write(2, b"a real problem\n")
    assert capfd.readouterr().err == "a real problem\n"


def test_a_missing_tensorflow_is_one_line_saying_how_to_install_it(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now fails

    def needs_tensorflow(config, positionals):
        import tensorflow  # noqa: F401

    assert run_command("prog", Example, needs_tensorflow, []) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'drn-tf[cpu]'" in err and err.startswith("prog:")
