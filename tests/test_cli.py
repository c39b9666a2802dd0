"""Tests for the ``drn-tf`` command line (drn_tf.cli)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import (
    DUAL_PT,
    IO_NPZ,
    PRIMAL_PT,
    REFERENCE,
    as_flags,
    needs_reference,
    read_log,
    run_python,
    tiny_config,
)
from PIL import Image

from drn_tf import cli
from drn_tf.settings import TrainConfig


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


@pytest.mark.slow
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


# --- start-up: no TensorFlow for --help, no TensorFlow log lines --------------------------------

ROOT = Path(__file__).resolve().parents[1]
# TensorFlow's C++ log lines (absl format `I0000 00:00:...`, its pre-initialisation notice and
# the oneDNN / CPU-feature notices).
TF_LOG = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN|cpu_feature_guard", re.MULTILINE)


def _user_env() -> dict[str, str]:
    """The environment a user runs drn-tf in: no TF_CPP_MIN_LOG_LEVEL (`make test` sets one)."""
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def _python(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=_user_env(),
        cwd=ROOT,
        timeout=300,
        **kwargs,
    )


def test_help_and_usage_errors_load_no_tensorflow():
    code = (
        "import sys, drn_tf\n"
        "from drn_tf import cli\n"
        "argvs = [['--help'], ['upscale', '--help'], ['evaluate', '--help'],\n"
        "         ['convert', '--help'], ['demo', '--help'], ['upscale', '--bogus'],\n"
        "         ['upscale', 'a.png'], ['evaluate', '--model', 'bicubic', '--scale', '0',\n"
        "         '--data', '.']]\n"
        "print([cli.main(a) for a in argvs])\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    result = _python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-2:] == ["[0, 0, 0, 0, 0, 2, 2, 2]", "[]"]


def test_train_help_loads_no_tensorflow():
    code = (
        "import sys\nfrom drn_tf import cli\nstatus = cli.main(['train', '--help'])\n"
        "print(status, 'tensorflow' in sys.modules)\n"
    )
    result = _python("-c", code)
    assert result.stdout.strip().splitlines()[-1] == "0 False"


def test_lazy_exports():
    import drn_tf
    from drn_tf import models, training

    assert drn_tf.build_drn is models.build_drn
    assert drn_tf.DRNConfig is models.DRNConfig
    assert drn_tf.DualRegressionModel is training.DualRegressionModel
    assert set(drn_tf.__all__) <= set(dir(drn_tf))
    with pytest.raises(AttributeError, match="no_such_thing"):
        drn_tf.no_such_thing  # noqa: B018


@pytest.fixture
def small_images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.slow
def test_no_tensorflow_log_lines_unless_verbose(tiny, small_images, tmp_path):
    argv = ["-m", "drn_tf", "upscale", str(small_images / "0.png"), "--model", str(tiny[1])]
    quiet = _python(*argv, "--output", str(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.stderr
    assert not TF_LOG.search(quiet.stderr), quiet.stderr
    assert (tmp_path / "quiet" / "0_x4.png").is_file()
    # The same command with -v shows them: the pattern above does catch TensorFlow's lines.
    verbose = _python(*argv, "--output", str(tmp_path / "verbose"), "-v")
    assert verbose.returncode == 0, verbose.stderr
    assert TF_LOG.search(verbose.stderr), verbose.stderr


# --- flags --------------------------------------------------------------------------------------


def test_top_level_help_lists_each_command_on_one_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("usage: drn-tf COMMAND")
    for name in ("upscale", "evaluate", "train", "adapt", "degrade", "convert", "package", "demo"):
        assert sum(line.split()[:1] == [name] for line in lines) == 1, name
    assert cli.main([]) == 2  # no command: the same overview, as an error
    assert "upscale" in capsys.readouterr().err
    import drn_tf

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"drn-tf {drn_tf.__version__}\n"


@pytest.mark.parametrize(
    "command, positional", [("upscale", "INPUT"), ("evaluate", "FOLDER"), ("convert", None)]
)
def test_help_shows_usage_with_positionals_and_plain_defaults(command, positional, capsys):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    usage = out.split("\n\n")[0]
    assert usage.startswith(f"usage: drn-tf {command} ")
    if positional:
        assert f"[{positional} ...]" in usage
    for absl_only in ("--flagfile", "--undefok", "absl", "drn_tf.cli", "--[no]"):
        assert absl_only not in out
    flat = " ".join(out.split())  # argparse wraps lines
    assert "(default: default)" in flat or "(default: drn-s)" in flat  # plain, not quoted
    assert "(default: 'default')" not in flat and "(default: None)" not in flat


def test_help_of_a_list_default_is_plain(capsys):
    from benchmarks import precision

    assert precision.main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: float32 mixed_bfloat16 mixed_float16)" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["convert", "--no-such-flag", "1"],
        ["upscale", "--model"],
        ["evaluate", "--scale", "four"],
        ["demo", "extra"],
    ],
)
def test_usage_error_is_one_line_and_a_hint(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert err[0].startswith(f"drn-tf {argv[0]}: ")
    assert err[1] == f"(see drn-tf {argv[0]} --help)"


def test_unknown_command_is_one_line_and_a_hint(capsys):
    assert cli.main(["upscael"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "drn-tf: unknown command 'upscael' (choose from upscale, evaluate, train, adapt, degrade, "
        "convert, package, demo, export)",
        "(see drn-tf --help)",
    ]


def test_train_takes_no_flags_and_lists(monkeypatch, tmp_path, capsys):
    from drn_tf import training

    seen = []
    monkeypatch.setattr(training, "train", seen.append)
    argv = ["train", "--no-augment", "--no-tensorboard", "--train-dir", "a", "b"]
    assert cli.main([*argv, "--output", str(tmp_path / "run"), "--batch-size", "3"]) == 0
    (config,) = seen
    assert (config.augment, config.tensorboard) == (False, False)
    assert config.train_dir == ["a", "b"] and config.batch_size == 3
    assert config.patch_size == TrainConfig().patch_size  # untouched defaults
    assert f"wrote {tmp_path / 'run' / 'model.keras'}" in capsys.readouterr().out


def test_train_interrupted_says_how_to_resume(monkeypatch, tmp_path, capsys):
    from drn_tf import training

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    assert cli.main(["train", "--train-dir", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "drn-tf train: interrupted; run the same command again to resume"


# --- Ctrl-C and SIGTERM -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_ends_upscale_with_one_line(signum, tiny, tmp_path):
    inputs = tmp_path / "many"
    inputs.mkdir()
    rng = np.random.default_rng(1)
    for i in range(300):  # far more than run before the signal arrives
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
            inputs / f"{i:03d}.png"
        )
    out = tmp_path / "out"
    # A job started in the background by a script (`make test &`) inherits SIGINT ignored,
    # as Unix wants; give the child Python's own Ctrl-C handler so the test holds anywhere.
    main = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'drn-tf'; runpy.run_module('drn_tf', run_name='__main__')"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", main, "upscale", str(inputs), "--output", str(out)]
        + ["--model", str(tiny[1])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_user_env(),
        cwd=ROOT,
    )
    deadline = time.monotonic() + 240
    while not list(out.glob("*_x4.png")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)  # until the first image is written, mid-run
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "drn-tf upscale: interrupted"
    assert "wrote" not in stdout
    written = list(out.iterdir())
    assert 0 < len(written) < 300
    assert [p.name for p in written if p.name.startswith(".")] == []  # no temp file left


@pytest.mark.slow
def test_sigterm_stops_training_with_one_line_and_it_resumes(tmp_path):
    """``kill -TERM`` of ``drn-tf train`` once two epochs are saved: the Ctrl-C line and
    status 130 (README: Ctrl-C or SIGTERM), and the same command resumes where it stopped."""
    config = tiny_config(tmp_path, steps=2000, steps_per_epoch=2)
    del config["val_dir"]  # no validation: epochs end sooner
    argv = [sys.executable, "-m", "drn_tf", "train", *as_flags(config)]
    log = Path(config["output"]) / "log.csv"

    def start() -> subprocess.Popen:
        env = {**_user_env(), "PYTHONUNBUFFERED": "1"}  # its lines as they are printed
        return subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
        )

    process = start()
    deadline = time.monotonic() + 240
    while not (log.is_file() and len(read_log(log)) >= 2) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)  # until two epochs are logged (and backed up): mid-run
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    ours = [line for line in stderr.splitlines() if line.startswith("drn-tf")]
    assert ours == ["drn-tf train: interrupted; run the same command again to resume"], stderr
    assert "wrote" not in stdout
    stopped_at = int(read_log(log)[-1]["step"])
    assert 4 <= stopped_at < 2000
    # Resumed with the same flags, but only to check where: a SIGTERM as soon as it says so.
    process = start()
    line = process.stdout.readline()  # "training on …", then whether it resumes
    while line.startswith("training on"):
        line = process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert line.startswith(f"resuming run {config['output']} at step ")
    assert int(line.split()[-1]) >= stopped_at  # an epoch may end between log and signal


# --- upscale: paths first -----------------------------------------------------------------------


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_upscale_removes_stale_temp_files(tiny, small_images, tmp_path, capsys):
    out = tmp_path / "out"
    dead = _dead_pid()
    stale = [out / f".0_x4.{dead}.0123abcd.png", out / "sub" / f".b_x4.{dead}.89abcdef.png"]
    live = out / f".c_x4.{os.getpid()}.01234567.png"  # a writer still running: kept
    other = out / ".hidden.png"  # not ours: kept
    for path in [*stale, live, other]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    argv = ["upscale", str(small_images / "0.png"), "--output", str(out), "--model", str(tiny[1])]
    assert cli.main([*argv, str(small_images / "1.png")]) == 0  # an input after a flag
    assert not any(path.exists() for path in stale)
    assert live.exists() and other.exists()
    assert (out / "0_x4.png").is_file() and (out / "1_x4.png").is_file()
    assert "wrote 2 image(s)" in capsys.readouterr().out


def test_upscale_unwritable_output_folder_is_reported_before_the_model_loads(
    small_images, tmp_path, monkeypatch, capsys
):
    read_only = tmp_path / "ro_out"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.access(read_only, os.W_OK):  # root ignores the mode: make access() tell the truth
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda path, mode: Path(path) != read_only and real_access(path, mode)
        )
    missing_model = tmp_path / "missing.keras"  # loading it would be the error if tried first
    argv = ["upscale", str(small_images), "--output", str(read_only), "--model", str(missing_model)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"drn-tf upscale: error: {read_only}: output folder is not writable"
    assert cli.main([*argv[:3], str(read_only / "new"), *argv[4:]]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        f"{read_only / 'new'}: cannot create the output folder: {read_only} is not writable"
    )


def test_upscale_output_that_is_a_file(small_images, tmp_path, capsys):
    existing = tmp_path / "result.png"
    existing.write_bytes(b"keep")
    missing_model = str(tmp_path / "missing.keras")
    for output, message in (
        (existing, f"{existing}: --output must be a folder, and this is a file"),
        (existing / "sub", f"cannot create the output folder: {existing} is a file"),
    ):
        argv = ["upscale", str(small_images), "--output", str(output), "--model", missing_model]
        assert cli.main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.endswith(message), err
    assert existing.read_bytes() == b"keep"


# --- evaluate -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, scale, rule",
    [
        ("bicubic", "0", "an integer of at least 2"),
        ("bicubic", "-4", "an integer of at least 2"),
        ("MODEL", "0", "a power of two"),
        ("MODEL", "3", "a power of two"),
    ],
)
def test_evaluate_bad_scale_names_the_flag(
    model, scale, rule, tiny, small_images, tmp_path, capsys
):
    output = tmp_path / "r.json"
    model = str(tiny[1]) if model == "MODEL" else model
    argv = ["evaluate", "--model", model, "--data", str(small_images), "--scale", scale]
    assert cli.main([*argv, "--json", str(output)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"drn-tf evaluate: --scale must be {rule}")
    assert err[0].endswith(f"got {scale}")
    assert not output.exists()


def test_evaluate_json_path_is_checked_before_the_model_loads(small_images, tmp_path, capsys):
    missing_model = str(tmp_path / "missing.keras")  # loading it would be the error if tried first
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for json_path, message in (
        (tmp_path, f"{tmp_path}: --json is a folder; give a file name"),
        (a_file / "r.json", f"{a_file}: the folder for --json is a file"),
    ):
        argv = ["evaluate", "--model", missing_model, "--data", str(small_images)]
        assert cli.main([*argv, "--json", str(json_path)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.endswith(message), err


# --- convert ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--n-blocks", "0"], "--n-blocks must be at least 1, got 0"),
        (["--n-feats", "-1"], "--n-feats must be at least 1, got -1"),
        (["--scale", "6"], "--scale must be a power of two (2, 4, 8, …), got 6"),
        (["--output", "model.h5"], "--output must name a .keras file, got model.h5"),
    ],
)
def test_convert_flag_errors_name_the_flag(flags, message, tmp_path, capsys):
    argv = ["convert", "--checkpoint", str(tmp_path / "a.pt"), "--output", "m.keras", *flags]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"drn-tf convert: {message}"
    assert list(tmp_path.iterdir()) == []


def test_convert_and_train_refuse_an_unknown_variant_alike(tmp_path, capsys):
    """One --variant flag (drn_tf.settings.ModelSize), its choices checked by argparse."""
    for argv in (
        ["convert", "--checkpoint", str(tmp_path / "a.pt"), "--output", "m.keras"],
        ["train", "--train-dir", str(tmp_path), "--output", str(tmp_path / "run")],
    ):
        assert cli.main([*argv, "--variant", "drn-x"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"drn-tf {argv[0]}: argument --variant: invalid choice: 'drn-x'")
    assert list(tmp_path.iterdir()) == []


@needs_reference
def test_convert_without_dual_checkpoint_says_the_duals_are_random(tmp_path, capsys):
    output = tmp_path / "primal_only.keras"
    assert cli.main(["convert", "--checkpoint", str(PRIMAL_PT), "--output", str(output)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == f"wrote {output}"
    assert "randomly initialised" in out[1] and "--dual-checkpoint" in out[1]
    with zipfile.ZipFile(output) as archive:  # and the saved model records it
        config = json.loads(archive.read("config.json"))
    assert "random" in config["config"]["info"]["duals"]


def test_convert_with_dual_checkpoint_prints_no_note(monkeypatch, tmp_path, capsys):
    from drn_tf import convert

    calls = []
    monkeypatch.setattr(convert, "convert_checkpoint", lambda *args, **kwargs: calls.append(args))
    monkeypatch.chdir(tmp_path)
    Path("a.pt").touch()
    Path("b.pt").touch()
    output = tmp_path / "m.keras"
    argv = ["convert", "--checkpoint", "a.pt", "--dual-checkpoint", "b.pt", "--output", str(output)]
    assert cli.main(argv) == 0
    assert calls and calls[0][4] == "b.pt"
    assert capsys.readouterr().out.strip() == f"wrote {output}"


def test_convert_package_and_degrade_keep_existing_files_unless_overwrite(
    tiny, monkeypatch, tmp_path, capsys
):
    from PIL import Image

    from drn_tf import convert

    monkeypatch.setattr(convert, "convert_checkpoint", lambda *args, **kwargs: None)
    mine = tmp_path / "mine.keras"
    mine.write_bytes(b"mine")
    (tmp_path / "a.pt").touch()
    convert_argv = ["convert", "--checkpoint", str(tmp_path / "a.pt")]
    package_argv = ["package", "--model", str(tiny[1])]
    for argv in (convert_argv, package_argv):
        assert cli.main([*argv, "--output", str(mine)]) == 1, argv
        err = capsys.readouterr().err
        assert err.strip().endswith(f"{mine}: exists; --overwrite replaces it"), err
        assert mine.read_bytes() == b"mine"
    own = tmp_path / "own.keras"  # package onto its own input
    own.write_bytes(tiny[1].read_bytes())
    assert cli.main(["package", "--model", str(own), "--output", str(own)]) == 1
    assert own.read_bytes() == tiny[1].read_bytes()
    assert cli.main([*package_argv, "--output", str(mine), "--overwrite"]) == 0
    assert mine.read_bytes() != b"mine"

    (tmp_path / "HR").mkdir()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "HR" / "a.png")
    lr = tmp_path / "LR_nearest" / "X2" / "ax2.png"
    lr.parent.mkdir(parents=True)
    lr.write_bytes(b"mine")
    degrade = ["degrade", "--hr-dir", str(tmp_path), "--scale", "2", "--output", str(tmp_path)]
    assert cli.main(degrade) == 0
    out = capsys.readouterr().out
    assert "wrote 0 image(s)" in out and "1 kept (already there; --overwrite" in out
    assert lr.read_bytes() == b"mine"
    assert cli.main([*degrade, "--overwrite"]) == 0
    assert lr.read_bytes() != b"mine"


def test_train_and_adapt_refuse_wrong_flag_values_before_loading_tensorflow(tmp_path):
    code = """
        import sys
        from drn_tf import cli
        status = cli.main(sys.argv[1:])
        print("exit", status, "tensorflow" in sys.modules)
    """
    folders = {
        "train": ["--train-dir", str(tmp_path)],
        "adapt": ["--paired-dir", str(tmp_path), "--unpaired-dir", str(tmp_path)],
    }
    for command, flags, message in (
        ("train", ["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        ("train", ["--n-feats", "0"], "--n-feats must be at least 1, got 0"),
        ("train", ["--patch-size", "50"], "--patch-size 50 is not a multiple of --scale 4"),
        ("adapt", ["--unpaired-ratio", "0.01"], "--unpaired-ratio 0.01 of --batch-size 32"),
        ("adapt", ["--learning-rate", "nan"], "--learning-rate must be positive, got nan"),
        ("adapt", [], None),  # a missing folder is a flag left out, also told at once
    ):
        argv = [command, *flags, "--output", str(tmp_path / "run")]
        if message is None:
            message = "no paired folder given: --paired-dir is required"
        else:
            argv += folders[command]
        result = run_python(code, *argv, timeout=120)
        assert result.stdout.strip().splitlines()[-1] == "exit 2 False", result.stderr
        assert result.stderr.startswith(f"drn-tf {command}: {message}"), result.stderr
    assert list(tmp_path.iterdir()) == []  # no run folder


def test_convert_checks_its_flags_and_files_before_loading_tensorflow(tmp_path):
    code = """
        import sys
        from drn_tf import cli
        status = cli.main(sys.argv[1:])
        print("exit", status, "tensorflow" in sys.modules)
    """
    missing = str(tmp_path / "missing.pt")
    for argv, expected, message in (
        (["--output", str(tmp_path / "m.keras")], "exit 1 False", f"{missing}: --checkpoint"),
        (["--variant", "drn-x", "--output", "m.keras"], "exit 2 False", "--variant: invalid"),
    ):
        result = run_python(code, "convert", "--checkpoint", missing, *argv, timeout=120)
        assert result.stdout.strip().splitlines()[-1] == expected, result.stderr
        assert message in result.stderr


def test_help_into_a_closed_pipe_prints_no_traceback():
    """`drn-tf --help | head -1`: the reader has gone before the help is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "drn_tf", "--help"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1 and result.stderr == ""
