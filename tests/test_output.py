"""Progress output redirected to a log (a pipe, a file) is plain lines: no carriage returns,
no ANSI escape codes (issue 22, item 15)."""

from __future__ import annotations

import keras
import numpy as np
from helpers import run_python, write_images

from drn_tf.progress import Bar
from drn_tf.training import ProgressBar


def assert_plain(text: str) -> None:
    assert "\r" not in text and "\x1b[" not in text and "\b" not in text, repr(text[-500:])


def test_folder_progress_in_a_log_is_plain_lines(tmp_path):
    hr = write_images(tmp_path / "hr", 3, seed=0, size=16)
    code = """
        import sys
        from drn_tf import cli
        sys.exit(cli.main(sys.argv[1:]))
    """
    args = ["degrade", "--hr-dir", str(hr), "--scale", "2", "--output", str(tmp_path / "out")]
    result = run_python(code, *args, timeout=120)  # stdout and stderr are pipes
    assert result.returncode == 0, result.stderr
    assert_plain(result.stdout + result.stderr)
    bar_lines = [line for line in result.stderr.splitlines() if "LR_nearest x2" in line]
    assert bar_lines and "3/3" in bar_lines[-1], result.stderr  # the last line: all done


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


def test_keras_progress_in_a_log_is_plain_lines(capsys):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((8, 2), "float32"), np.zeros((8, 1), "float32")
    model.fit(x, y, batch_size=2, epochs=2, verbose=1, callbacks=[ProgressBar()])
    out = capsys.readouterr().out
    assert_plain(out)
    lines = out.splitlines()
    assert "Epoch 2/2" in lines and sum(line.startswith("4/4") for line in lines) == 2, lines
