"""Tests for drn_tf.flags: settings dataclasses as command-line flags."""

from __future__ import annotations

import dataclasses
import re

import pytest

from drn_tf.flags import FlagError, UsageError, build_parser, check_choices, parse_config, setting


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


def test_check_choices_names_the_flag_and_lets_none_pass():
    check_choices(Example(name=None))
    with pytest.raises(FlagError, match=r"^--kind must be one of s, l, got 'm'$"):
        check_choices(Example(kind="m"))
    assert issubclass(FlagError, UsageError) and issubclass(FlagError, ValueError)
