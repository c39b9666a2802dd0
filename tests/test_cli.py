"""Tests for the ``drn-tf`` command line (drn_tf.cli)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from drn_tf import cli

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference"
PRIMAL_PT = REFERENCE / "drn_s_x4.pt"
DUAL_PT = REFERENCE / "drn_s_x4_dual.pt"
IO_NPZ = REFERENCE / "drn_s_x4_io.npz"

needs_reference = pytest.mark.skipif(
    not (PRIMAL_PT.is_file() and DUAL_PT.is_file() and IO_NPZ.is_file()),
    reason=f"reference checkpoints not found under {REFERENCE}",
)


@pytest.fixture(scope="module")
def cli_conversion(tmp_path_factory):
    """Runs ``drn-tf convert`` once on the reference checkpoints."""
    if not (PRIMAL_PT.is_file() and DUAL_PT.is_file()):
        pytest.skip(f"reference checkpoints not found under {REFERENCE}")
    output = tmp_path_factory.mktemp("cli") / "models" / "drn_s_x4.keras"  # parent is created
    status = cli.main(
        [
            "convert",
            "--checkpoint",
            str(PRIMAL_PT),
            "--dual-checkpoint",
            str(DUAL_PT),
            "--variant",
            "drn-s",
            "--scale",
            "4",
            "--output",
            str(output),
        ]
    )
    return status, output


@needs_reference
def test_convert_writes_a_loadable_file(cli_conversion):
    status, output = cli_conversion
    assert status == 0
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]  # no temp files
    model = keras.saving.load_model(output)
    with np.load(IO_NPZ) as data:
        lr, sr_2, sr_1, dual_1 = data["lr"], data["sr_2"], data["sr_1"], data["dual_1"]
    outputs = model(lr)
    np.testing.assert_allclose(np.asarray(outputs[-1]), sr_2, rtol=0, atol=1e-2)
    np.testing.assert_allclose(np.asarray(outputs[1]), sr_1, rtol=0, atol=1e-2)
    # The dual networks came from --dual-checkpoint, not from a fresh initialisation.
    np.testing.assert_allclose(np.asarray(model.duals[1](sr_2)), dual_1, atol=1e-2)


@needs_reference
def test_wrong_scale_is_a_one_line_error(tmp_path, capsys):
    output = tmp_path / "x8.keras"
    status = cli.main(
        [
            "convert",
            "--checkpoint",
            str(PRIMAL_PT),
            "--scale",
            "8",
            "--n-blocks",
            "1",
            "--output",
            str(output),
        ]
    )
    captured = capsys.readouterr()
    assert status == 1
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert str(PRIMAL_PT) in lines[0]
    assert "looks like scale 4" in lines[0]
    assert "wrote" not in captured.out
    assert list(tmp_path.iterdir()) == []


def test_missing_checkpoint_file_is_exit_1(tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    status = cli.main(
        [
            "convert",
            "--checkpoint",
            str(missing),
            "--n-blocks",
            "1",
            "--n-feats",
            "4",
            "--output",
            str(tmp_path / "m.keras"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 1
    assert len(err.strip().splitlines()) == 1 and str(missing) in err
    assert not (tmp_path / "m.keras").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["convert", "--no-such-flag", "1"],
        ["convert", "--scale", "four", "--checkpoint", "a.pt", "--output", "b.keras"],
        ["convert", "--output", "b.keras"],  # --checkpoint missing
        ["convert", "--checkpoint", "a.pt"],  # --output missing
        ["convert", "--checkpoint", "a.pt", "--output", "b.keras", "extra"],
        ["no-such-command"],
        [],
    ],
    ids=[
        "unknown-flag",
        "bad-int",
        "no-checkpoint",
        "no-output",
        "positional",
        "command",
        "nothing",
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.strip()
    assert "wrote" not in captured.out


@pytest.mark.parametrize("argv", [["convert", "--help"], ["convert", "-h"], ["--help"]])
def test_help_exits_0(argv, capsys):
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    if argv[0] == "convert":
        for flag in (
            "--checkpoint",
            "--dual-checkpoint",
            "--variant",
            "--scale",
            "--output",
            "--n-blocks",
            "--n-feats",
        ):
            assert flag in captured.out
    else:
        assert "convert" in captured.out + captured.err


def test_bad_scale_value_is_reported(tmp_path, capsys):
    status = cli.main(
        [
            "convert",
            "--checkpoint",
            str(tmp_path / "a.pt"),
            "--scale",
            "3",
            "--output",
            str(tmp_path / "b.keras"),
        ]
    )
    err = capsys.readouterr().err
    assert status in (1, 2)
    assert "scale" in err
    assert list(tmp_path.iterdir()) == []


def test_python_dash_m_help():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "drn_tf", "convert", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    assert "--dual-checkpoint" in result.stdout
