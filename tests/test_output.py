"""Progress output redirected to a log (a pipe, a file) is plain lines: no carriage returns,
no ANSI escape codes (issue 22, item 15)."""

from __future__ import annotations

import keras
import numpy as np
from helpers import assert_plain, run_python, write_images

from drn_tf.callbacks import ProgressBar


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


def test_keras_progress_in_a_log_is_plain_lines(capsys):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((8, 2), "float32"), np.zeros((8, 1), "float32")
    model.fit(x, y, batch_size=2, epochs=2, verbose=1, callbacks=[ProgressBar()])
    out = capsys.readouterr().out
    assert_plain(out)
    lines = out.splitlines()
    assert "Epoch 2/2" in lines and sum(line.startswith("4/4") for line in lines) == 2, lines


def test_a_very_large_image_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from drn_tf import cli

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL warns above it: 32x32 is over
    folder = write_images(tmp_path / "hr", 1, seed=0, size=32)
    assert cli.main(["evaluate", "--model", "bicubic", "--scale", "2", str(folder)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        f"drn-tf evaluate: warning: {folder / 'img0.png'}: very large image (32x32, 0.0 "
        "megapixels; PIL warns above 0.0): decoding it takes much memory "
        "(DecompressionBombWarning)"
    ]
