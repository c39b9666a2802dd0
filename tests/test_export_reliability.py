"""The exporters when things go wrong: Ctrl-C and SIGTERM (also when the interrupt is lost in a
finalizer), a full disk, a killed export's leftovers, a calibration image smaller than one crop;
and ``drn-tf export FORMAT`` with its stage lines."""

from __future__ import annotations

import dataclasses
import errno
import os
import pty
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import ROOT, SUBPROCESS_ENV
from PIL import Image

from drn_tf import cli
from drn_tf.console import run_command
from export import base, onnx, openvino, saved_model, staging, tflite

#: A stage line of :func:`export.base.progress`: ``[   4.2s] verifying against Keras``.
STAGE = re.compile(r"^\[ *\d+\.\ds\] ")

#: ``python -m export.onnx`` with Python's own Ctrl-C handler (a job started in the background
#: inherits SIGINT ignored) and, given ``lose``, a SIGTERM that arrives while a finalizer runs
#: just after the conversion: its KeyboardInterrupt is raised inside ``__del__``, where Python
#: only prints "Exception ignored" and carries on.
EXPORT_ONNX = """
    import os, signal, sys, time
    from export import onnx

    signal.signal(signal.SIGINT, signal.default_int_handler)
    if sys.argv[1] == "lose":
        class SigtermWhenCollected:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:  # the handler runs here, inside __del__
                    time.sleep(0.01)

        convert = onnx.to_onnx

        def convert_then_collect(*args, **kwargs):
            path = convert(*args, **kwargs)
            SigtermWhenCollected()
            return path

        onnx.to_onnx = convert_then_collect
    sys.exit(onnx.main(sys.argv[2:]))
"""


class Export:
    """A command running in a child process with stderr on a terminal (so that it shows its
    stage lines, read as they come)."""

    def __init__(self, *command: str):
        master, terminal = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, *command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            env=SUBPROCESS_ENV,
            cwd=ROOT,
        )
        os.close(terminal)
        self.master, self.err = master, ""

    def _read(self, timeout: float) -> bool:
        """Reads what stderr has within ``timeout`` s; False once it is closed."""
        if not select.select([self.master], [], [], timeout)[0]:
            return True
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # EIO: the child's end is closed
            chunk = b""
        self.err += chunk.decode(errors="replace").replace("\r\n", "\n")
        return bool(chunk)

    def wait_for(self, text: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.err:
            assert time.monotonic() < deadline, f"no {text!r} in time:\n{self.err}"
            assert self._read(1), f"ended before {text!r}:\n{self.err}"

    def finish(self, timeout: float = 240) -> tuple[int, str, list[str]]:
        """Exit status, stdout and the stderr lines that are not stage lines."""
        deadline = time.monotonic() + timeout
        while self._read(1):
            assert time.monotonic() < deadline, self.err
        out = self.process.communicate(timeout=timeout)[0]
        os.close(self.master)
        lines = [line for line in self.err.splitlines() if line.strip()]
        return self.process.returncode, out, [line for line in lines if not STAGE.match(line)]


def _export_onnx(model: Path, output: Path, mode: str = "plain", *flags: str) -> Export:
    argv = ["--model", str(model), "--output", str(output), *flags]
    return Export("-c", textwrap.dedent(EXPORT_ONNX), mode, *argv)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- Ctrl-C and SIGTERM ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "signum"),
    [
        ("converting", signal.SIGTERM),
        ("verifying", signal.SIGINT),
    ],
)
def test_a_signal_at_any_stage_stops_the_export_with_one_line(tiny, tmp_path, stage, signum):
    output = tmp_path / "out" / "m.onnx"
    export = _export_onnx(tiny[1], output, "plain", "--timing-runs", "5")  # time to stop
    export.wait_for(f"] {stage}")
    export.process.send_signal(signum)
    status, out, lines = export.finish()
    assert (status, lines) == (130, ["python -m export.onnx: interrupted"]), export.err
    assert out == ""
    assert not output.parent.exists()  # neither the artifact, nor a temporary, nor its folder


@pytest.mark.slow
def test_an_interrupt_lost_in_a_finalizer_still_stops_the_export(tiny, tmp_path):
    output = tmp_path / "out" / "m.onnx"
    status, out, lines = _export_onnx(tiny[1], output, "lose", "--timing-runs", "0").finish()
    assert (status, lines) == (130, ["python -m export.onnx: interrupted"]), lines
    assert out == ""
    assert not output.parent.exists()


def test_run_command_stops_on_an_interrupt_lost_in_a_finalizer(tmp_path, capsys):
    """The same in process: ``staged`` does not move the artifact in, ``run_command`` says
    interrupted (exit 130) and hides the "Exception ignored" traceback."""

    class SigtermWhenCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # the handler runs here, inside __del__
                time.sleep(0.01)

    output = tmp_path / "out" / "m.bin"
    reached = []

    def export(config, positionals):
        with staging.staged(output) as temp:
            temp.write_text("complete")
            SigtermWhenCollected()
            reached.append("the interrupt was lost")

    assert run_command("prog", dataclasses.make_dataclass("Flags", []), export, []) == 130
    assert reached == ["the interrupt was lost"]
    assert capsys.readouterr().err.strip() == "prog: interrupted"
    assert not output.parent.exists()


def test_run_command_stops_when_an_extension_turned_the_interrupt_into_another_error(capsys):
    """TensorFlow's C++ code, when the KeyboardInterrupt breaks its call back into Python,
    prints the traceback itself (``PyErr_Print``, i.e. ``sys.excepthook``) and raises another
    error: still Ctrl-C's one line and 130."""

    def export(config, positionals):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):
                time.sleep(0.01)
        except KeyboardInterrupt:
            sys.excepthook(*sys.exc_info())
            raise AttributeError("'list' object has no attribute '_type_spec'") from None

    assert run_command("prog", dataclasses.make_dataclass("Flags", []), export, []) == 130
    assert capsys.readouterr().err.strip() == "prog: interrupted"


# --- a full disk ---------------------------------------------------------------------------


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a full disk fails a write


def test_full_disk_onnx_is_one_line_naming_the_destination(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(base.require("onnx"), "save", _no_space)
    output = tmp_path / "models" / "m.onnx"
    argv = ["--model", str(tiny[1]), "--output", str(output), "--timing-runs", "0"]
    assert onnx.main(argv) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"python -m export.onnx: error: {output}: cannot write, no space left on device"
    ]
    assert not output.parent.exists()


def test_full_disk_saved_model_is_one_line_naming_the_destination(
    tiny, tmp_path, capsys, monkeypatch
):
    import tensorflow as tf
    from tensorflow.python.lib.io import file_io

    def no_space(file, content):  # what TensorFlow's writer raises on a full disk
        raise tf.errors.ResourceExhaustedError(None, None, f"{file.name}; No space left on device")

    monkeypatch.setattr(file_io.FileIO, "write", no_space)
    root = tmp_path / "models"
    assert saved_model.main(["--model", str(tiny[1]), "--output", str(root)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"python -m export.saved_model: error: {root / '1'}: cannot write, no space left on device"
    ]
    assert not root.exists()  # no empty model base folder left for a server to scan


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs (needs root and a kernel that lets us mount one)."""
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield folder
    finally:
        # A file the export opened can still be closing (garbage collection, a verifying
        # child): detach lazily then, so teardown never fails on "target is busy".
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(folder)], check=True)


@pytest.mark.parametrize("format", ["onnx", "saved_model", "openvino"])
def test_a_real_full_disk(tiny, full_disk, capsys, format):
    module = {"onnx": onnx, "saved_model": saved_model, "openvino": openvino}[format]
    output = full_disk / "models" / {"onnx": "m.onnx", "saved_model": "", "openvino": "ir"}[format]
    argv = ["--model", str(tiny[1]), "--output", str(output)]
    assert module.main(argv) == 1
    destination = output / "1" if format == "saved_model" else output
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"python -m export.{format}: error: {destination}: cannot write, no space left on device"
    ]
    assert list(full_disk.iterdir()) == []


# --- what a killed export left ---------------------------------------------------------------


#: Per format: --output under the folder, and what a finished export leaves in the folder.
KILLED = {
    "onnx": ("m.onnx", ["m.onnx", "m.onnx.json"]),
    "saved_model": ("", ["1"]),  # the folder is TF Serving's model base folder
}


@pytest.mark.slow
@pytest.mark.parametrize("format", list(KILLED))
def test_a_killed_export_is_swept_by_the_next(tiny, tmp_path, format):
    folder = tmp_path / "out"
    name, finished = KILLED[format]
    output = folder / name
    killed = Export("-m", f"export.{format}", "--model", str(tiny[1]), "--output", str(output))
    killed.wait_for("] verifying")  # the artifact is written, not yet moved into place
    killed.process.kill()
    assert killed.finish()[0] == -signal.SIGKILL
    left = _hidden(folder)
    assert left and all(f".{killed.process.pid}." in name for name in left), left

    export = {"onnx": onnx.export_onnx, "saved_model": saved_model.export_saved_model}[format]
    export(tiny[1], output, timing_runs=0)
    assert sorted(p.name for p in folder.iterdir()) == finished


# --- calibration images smaller than one crop ------------------------------------------------


@pytest.mark.parametrize("side", [1, 8])
@pytest.mark.parametrize("format", ["tflite", "openvino"])
def test_a_tiny_calibration_image_is_one_line(tiny, tmp_path, capsys, format, side):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (side, side), (120, 80, 40)).save(photos / "tiny.png")
    output = tmp_path / "out" / ("m.tflite" if format == "tflite" else "ir")
    flag = "--quantization" if format == "tflite" else "--precision"
    argv = ["--model", str(tiny[1]), "--output", str(output), flag, "int8"]
    module = {"tflite": tflite, "openvino": openvino}[format]
    assert module.main([*argv, "--calibration-data", str(photos)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"python -m export.{format}: error: no calibration image is large enough: all under 192 "
        f"pixels on a side (48-pixel LR crops at ×4): {photos / 'tiny.png'} ({side}x{side})"
    ]
    assert not output.parent.exists()


# --- drn-tf export -------------------------------------------------------------------------


def test_drn_tf_help_lists_export_and_stays_tensorflow_free():
    code = """
        import sys
        from drn_tf import cli

        for argv in (["--help"], ["export", "--help"], ["export", "onnx", "--help"]):
            assert cli.main(argv) == 0
        print(sorted(m for m in ("tensorflow", "keras", "onnx") if m in sys.modules))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=SUBPROCESS_ENV,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    overview, formats, flags, loaded = done.stdout.split("usage: ")[1:4] + [
        done.stdout.splitlines()[-1]
    ]
    assert loaded == "[]"
    assert re.search(r"^  export +Export a model", overview, re.M)
    for name in cli.EXPORT_FORMATS:
        assert re.search(rf"^  {name} +\S", formats, re.M)
    assert flags.startswith("drn-tf export onnx [flags]") and "--opset" in flags


@pytest.mark.parametrize("format", list(cli.EXPORT_FORMATS))
def test_drn_tf_export_runs_the_exporter_under_its_name(format, capsys):
    assert cli.main(["export", format, "--no-such-flag"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"drn-tf export {format}: ") and "--no-such-flag" in err[0]
    assert err[1] == f"(see drn-tf export {format} --help)"


def test_drn_tf_export_unknown_or_missing_format(capsys):
    assert cli.main(["export", "onxx"]) == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[0]
        .startswith("drn-tf export: unknown format 'onxx' (choose from saved_model, tflite, onnx,")
    )
    assert cli.main(["export"]) == 2
    assert "usage: drn-tf export FORMAT" in capsys.readouterr().err


@pytest.mark.slow
def test_drn_tf_export_shows_its_stages(tiny, tmp_path):
    output = tmp_path / "m.onnx"
    export = Export(
        "-m", "drn_tf", "export", "onnx", "--model", str(tiny[1]), "--output", str(output),
        "--timing-runs", "2",
    )  # fmt: skip
    status, out, lines = export.finish()
    assert (status, lines) == (0, []), export.err
    stages = [STAGE.sub("", line) for line in export.err.splitlines() if STAGE.match(line)]
    assert stages == [
        f"loading {tiny[1]}",
        "converting to ONNX (opset 17)",
        "verifying against Keras",
        "timing (2 runs)",
        f"writing {output}",
    ]
    assert out.startswith(f"wrote {output} (onnx, fp32)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json"]
