"""Tests for drn_tf.config: flags from dataclasses, and the command runner."""

from __future__ import annotations

import dataclasses
import os
import re
import signal

import pytest

from drn_tf.config import (
    UsageError,
    build_parser,
    parse_config,
    run_command,
    setting,
    without_tensorflow_log_lines,
)


@dataclasses.dataclass
class Example:
    """Does an example thing.

    Second paragraph, not in --help.
    """

    batch_size: int = setting(32, "Batch size.")
    rate: float = setting(0.5, "A rate.")
    augment: bool = setting(True, "Augment.")
    folders: list[str] = setting(["a", "b"], "Folders.")
    name: str | None = setting(None, "A name.")
    kind: str = setting("s", "A kind.", choices=("s", "l"))


@dataclasses.dataclass
class NoDoc:
    size: int = setting(1, "Size.")


def test_parse_config_types_and_defaults():
    config, extra, verbose = parse_config(Example, [], "prog")
    assert config == Example() and extra == [] and verbose is False
    config, _, _ = parse_config(
        Example, ["--batch-size", "8", "--rate", "1e-3", "--name", "x", "--kind", "l"], "prog"
    )
    assert (config.batch_size, config.rate, config.name, config.kind) == (8, 1e-3, "x", "l")


def test_bool_flags_take_no_form():
    assert parse_config(Example, ["--no-augment"], "prog")[0].augment is False
    assert parse_config(Example, ["--no-augment", "--augment"], "prog")[0].augment is True


def test_list_flags_take_several_values_and_repeat():
    config = parse_config(Example, ["--folders", "x", "y", "--folders", "z"], "prog")[0]
    assert config.folders == ["x", "y", "z"]
    first, second = (parse_config(Example, [], "prog")[0] for _ in range(2))
    assert first.folders == ["a", "b"] and first.folders is not second.folders  # fresh copies


def test_positionals_may_come_between_flags():
    _, extra, verbose = parse_config(
        Example, ["a.png", "--batch-size", "2", "b.png", "-v"], "prog", positionals="INPUT"
    )
    assert extra == ["a.png", "b.png"] and verbose is True


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-size", "x"], "argument --batch-size: invalid int value: 'x'"),
        (["--kind", "m"], "argument --kind: invalid choice: 'm'"),
        (["--nope"], "unrecognized arguments: --nope"),
        (["--augment=1"], "argument --augment/--no-augment: ignored explicit argument '1'"),
    ],
)
def test_bad_flags_raise_usage_error(argv, message):
    with pytest.raises(UsageError, match="^" + re.escape(message)):
        parse_config(Example, argv, "prog")


def test_help_text():
    text = " ".join(build_parser(Example, "prog", "INPUT").format_help().split())
    assert text.startswith("usage: prog [flags] [INPUT ...]")
    assert "--batch-size BATCH_SIZE Batch size." in text
    assert "[INPUT ...]" in text
    assert "Does an example thing." in text and "Second paragraph" not in text
    assert "Batch size. (default: 32)" in text
    assert "--augment, --no-augment Augment. (default: on)" in text
    assert "Folders. (default: a b)" in text
    assert "A name." in text and "(default: None)" not in text
    assert "--kind {s,l}" in text
    # A class without a docstring gets no description, not the signature dataclass invents.
    assert "NoDoc(" not in build_parser(NoDoc, "prog").format_help()


def test_v_and_verbose_show_logs():
    for flag in ("-v", "--verbose"):
        _, _, verbose = parse_config(Example, [flag], "prog")
        assert verbose is True


# --- run_command --------------------------------------------------------------------------------


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
