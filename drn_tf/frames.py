"""Reading video files: which files are videos, opening one, and frames sampled over a clip.

Decoding is FFmpeg's, in-process through PyAV (its wheels carry FFmpeg; no system ffmpeg).
This module needs no TensorFlow: :mod:`drn_tf.training_images` reads footage as DRN-Adapt's LR-only
data through it, and :mod:`drn_tf.video` upscales videos with it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoReadError",
    "find_videos",
    "frame_path",
    "is_video",
    "open_video",
    "sample_frames",
]

PathLike = str | os.PathLike[str]

#: Suffixes of the files read as videos (case-insensitive).
VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v"})


class VideoReadError(ValueError):
    """A file that cannot be read as a video; the message starts with its path."""


def is_video(path: PathLike) -> bool:
    """Whether ``path`` has a video suffix (:data:`VIDEO_EXTENSIONS`); the file is not read."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def find_videos(root: PathLike) -> list[Path]:
    """The video files under the folder ``root`` (recursive, sorted), skipping hidden files and
    folders as :func:`drn_tf.images.find_images` does (temporary outputs start with a dot)."""
    found = []
    for folder, folders, files in os.walk(root, followlinks=True):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [
            Path(folder) / name for name in files if not name.startswith(".") and is_video(name)
        ]
    return sorted(found)


@contextmanager
def open_video(path: PathLike) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """``(container, its first video stream)`` of the file ``path``, closed on exit.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        VideoReadError: not a media file FFmpeg reads, or one without a video stream.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {'a folder' if path.is_dir() else 'does not exist'}")
    try:
        container = av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as error:
        raise VideoReadError(f"{path}: not a video FFmpeg can read ({error.strerror})") from None
    with container:
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams}) or ["no"]
            raise VideoReadError(f"{path}: no video stream ({', '.join(kinds)} streams only)")
        yield container, container.streams.video[0]


def decoded_frames(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    skipped: list[int],
    others: Sequence[av.stream.Stream] = (),
    other_packets: Callable[[av.Packet], None] | None = None,
) -> Iterator[av.VideoFrame]:
    """The frames of ``stream``, decoded one packet at a time (memory stays flat).

    Packets of the streams ``others``, demuxed in between, go to ``other_packets``. Video
    packets the decoder rejects are dropped; ``skipped[0]`` ends as the number of video
    packets that gave no frame (corrupt data), counted once the stream is read to its end."""
    packets = frames = 0
    for packet in container.demux(stream, *others):
        if packet.stream is not stream:
            other_packets(packet)
            continue
        packets += packet.size > 0
        try:
            decoded = packet.decode()  # the empty packet at the end flushes the decoder
        except av.FFmpegError:  # corrupt data: this packet's frame is lost
            continue
        for frame in decoded:
            frames += 1
            yield frame
    skipped[0] = max(0, packets - frames)


def frame_path(video: PathLike, index: int) -> Path:
    """The name a sampled frame goes by: ``clip.mp4/frame_000012`` (its index in the clip)."""
    return Path(video) / f"frame_{index:06d}"


def sample_frames(path: PathLike, count: int) -> list[tuple[Path, np.ndarray]]:
    """``count`` frames spread evenly over the video ``path``, as uint8 RGB ``(h, w, 3)``.

    Frame ``k`` of ``n`` is the one at index ``floor((k + 0.5) · n / count)`` (the middle of
    each of ``count`` equal spans); a clip of ``n <= count`` frames gives all of them. Frames
    are named by :func:`frame_path`. Rotation is not applied (the pixels as coded); 10-bit
    video is read as 8-bit.

    Raises:
        VideoReadError: not a video, no video stream, or no frame decodes.
    """
    if count < 1:
        raise ValueError(f"frames per video must be at least 1, got {count}")
    with open_video(path) as (container, stream):
        # Containers that do not count frames (Matroska) are counted by their packets.
        total = stream.frames or sum(p.size > 0 for p in container.demux(stream))
    wanted = {int((k + 0.5) * total / count) for k in range(min(count, total))}
    frames = []
    with open_video(path) as (container, stream):
        for index, frame in enumerate(decoded_frames(container, stream, [0])):
            if index in wanted:
                frames.append((frame_path(path, index), frame.to_ndarray(format="rgb24")))
            if len(frames) == len(wanted):
                break
    if not frames:
        raise VideoReadError(f"{path}: no video frame could be decoded")
    return frames
