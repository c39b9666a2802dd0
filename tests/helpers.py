"""Constants and helpers shared by test modules (fixtures live in conftest.py)."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

#: The repository, for subprocesses that import drn_tf from the working tree.
ROOT = Path(__file__).resolve().parents[1]
SUBPROCESS_ENV = {
    **os.environ,
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}

#: The data and reference files beside the clone (``../shared``).
SHARED = Path(__file__).resolve().parents[2] / "shared"
SET5 = SHARED / "data" / "benchmark" / "Set5"
#: The authors' checkpoint format (random weights) with expected outputs, for parity tests.
REFERENCE = SHARED / "reference"
PRIMAL_PT = REFERENCE / "drn_s_x4.pt"
DUAL_PT = REFERENCE / "drn_s_x4_dual.pt"
IO_NPZ = REFERENCE / "drn_s_x4_io.npz"

#: The sizes of the small models that behaviour tests build (1 RCAB per phase, 4 features).
SMALL = {"n_blocks": 1, "n_feats": 4}

needs_reference = pytest.mark.skipif(
    not (PRIMAL_PT.is_file() and DUAL_PT.is_file() and IO_NPZ.is_file()),
    reason=f"reference checkpoints not found under {REFERENCE}",
)


def photo_batch(height: int, width: int) -> np.ndarray:
    """Two different crops of the sample photo's ×4 LR: float32 ``(2, height, width, 3)`` on
    0..255."""
    from export import photo_sets

    _, lr = photo_sets.probe_images(4)[0]
    return np.concatenate([lr[:, :height, :width], lr[:, -height:, -width:]]).astype(np.float32)


def small_model(scale: int = 4, dual_weight: float = 0.1, seed: int = 0):
    """A :class:`~drn_tf.dual_regression.DualRegressionModel` of :data:`SMALL` size, seeded."""
    import keras

    from drn_tf.dual_regression import DualRegressionModel
    from drn_tf.models import build_drn, build_duals

    keras.utils.set_random_seed(seed)
    return DualRegressionModel(
        build_drn("drn-s", scale, **SMALL),
        build_duals("drn-s", scale, **SMALL),
        dual_weight=dual_weight,
    )


def pyramid_batch(scale: int = 4, lr_size: int = 8, batch: int = 2, seed: int = 0):
    """``(lr, (T_1 … T_p))`` as ``make_train_dataset`` yields them: float32 on 0..255."""
    rng = np.random.default_rng(seed)
    levels = [
        rng.uniform(0, 255, (batch, lr_size * 2**k, lr_size * 2**k, 3)).astype(np.float32)
        for k in range(int(np.log2(scale)) + 1)
    ]
    return levels[0], tuple(levels[1:])


def run_python(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=SUBPROCESS_ENV,
        cwd=ROOT,
    )


def last_json(output: str) -> dict:
    """The last line of ``output`` that is a JSON object (TensorFlow may log before it)."""
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert lines, f"no JSON result in the output:\n{output[-3000:]}"
    return json.loads(lines[-1])


#: A run (``drn-tf train`` or ``adapt``) that dies like a killed process, without clean-up, as
#: its third epoch starts. argv: the config as JSON, then ``train`` or ``adapt``.
KILLED_RUN_SCRIPT = """
    import json
    import os
    import sys

    import keras

    from drn_tf import training
    from drn_tf.settings import AdaptConfig, TrainConfig


    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                sys.stdout.flush()
                os._exit(17)


    fit = training.DualRegressionModel.fit


    def fit_then_die(self, *args, callbacks=(), **kwargs):
        return fit(self, *args, callbacks=[*callbacks, Kill()], **kwargs)


    training.DualRegressionModel.fit = fit_then_die
    config = AdaptConfig if sys.argv[2] == "adapt" else TrainConfig
    training.train(config(**json.loads(sys.argv[1])))
"""


def run_killed(config: dict, command: str) -> subprocess.CompletedProcess:
    """Runs ``config`` (``command``: ``train`` or ``adapt``) until it dies as epoch 3 starts."""
    return run_python(KILLED_RUN_SCRIPT, json.dumps(config), command, timeout=300)


def write_images(folder: Path, count: int, seed: int, size: int = 64) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    for i in range(count):
        noise = rng.integers(0, 40, (size, size, 3))
        smooth = np.stack([x * 4, y * 4, (x + y) * 2], -1) + noise
        Image.fromarray(np.clip(smooth, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def assert_plain(text: str) -> None:
    """``text`` has no carriage return, ANSI escape code or backspace: it reads well in a log."""
    assert "\r" not in text and "\x1b[" not in text and "\b" not in text, repr(text[-500:])


def read_log(path: Path) -> list[dict]:
    with open(path) as file:
        return list(csv.DictReader(file))


def tiny_config(root: Path, **changes) -> dict:
    """A run of the tiny model on 48×48 images, 32×32 HR patches, batch 2."""
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir():
        write_images(train_dir, 3, seed=0, size=48)
        write_images(val_dir, 1, seed=1, size=48)
    config = {
        "train_dir": [str(train_dir)],
        "val_dir": [str(val_dir)],
        "output": str(root / "run"),
        "variant": "drn-s",
        "scale": 4,
        "n_blocks": 1,
        "n_feats": 4,
        "steps": 5,
        "steps_per_epoch": 2,
        "batch_size": 2,
        "patch_size": 32,
        "precision": "float32",
        "tensorboard": False,
        "progress": 0,
        "seed": 1,
    }
    return {**config, **changes}


def as_flags(config: dict) -> list[str]:
    """The command-line flags of a settings dict (:func:`tiny_config`): ``--name value``,
    lists as several values, booleans as ``--name`` / ``--no-name``."""
    flags = []
    for name, value in config.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, *map(str, value if isinstance(value, list) else [value])]
    return flags


def make_clip(
    path: Path,
    frames: int = 24,
    size: tuple[int, int] = (48, 32),
    *,
    audio: bool = True,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int | None = None,
) -> Path:
    """A clip of ``frames`` moving gradients (``size`` = W, H) at 24 frames/s, with a mono
    AAC 440 Hz track as long as the video; ``pts`` in ``time_base`` for variable frame rate."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        context = stream.codec_context
        context.color_primaries = context.color_trc = context.colorspace = 1  # BT.709
        if time_base is not None:
            context.time_base = stream.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=44100) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for i in range(frames):
            image = np.stack([x * 5 + i * 7, y * 6, (x + y) * 3 + i * 11], -1) % 256
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), "rgb24")
            frame.pts = i if pts is None else pts[i]
            if time_base is not None:
                frame.time_base = time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if sound is not None:
            total = frames * 44100 // 24
            for start in range(0, total, 1024):
                samples = np.arange(start, min(start + 1024, total))
                wave = (0.3 * np.sin(2 * np.pi * 440 * samples / 44100)).astype(np.float32)
                chunk = av.AudioFrame.from_ndarray(wave[None], "fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 44100, start
                out.mux(sound.encode(chunk))
            out.mux(sound.encode())
    return path


def decode(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))
