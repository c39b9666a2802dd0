"""Tests for drn_tf.frames: frames sampled evenly over each clip, named by their index."""

from __future__ import annotations

import numpy as np
from helpers import decode, make_clip

from drn_tf.training_images import load_lr_images


def test_frames_are_sampled_evenly_over_each_clip(clip, tmp_path):
    folder = tmp_path / "footage"
    folder.mkdir()
    make_clip(folder / "two.mkv", 10)
    images, skipped = load_lr_images([clip, folder], min_size=8, frames_per_video=4)
    assert [p.as_posix() for p, _ in images] == [
        *(f"{clip.as_posix()}/frame_{i:06d}" for i in (3, 9, 15, 21)),
        *(f"{folder.as_posix()}/two.mkv/frame_{i:06d}" for i in (1, 3, 6, 8)),
    ]
    decoded = decode(clip)
    assert np.array_equal(images[1][1], decoded[9].to_ndarray(format="rgb24"))
    assert skipped == []
