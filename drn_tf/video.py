"""Upscaling videos: frames stream from FFmpeg's decoder through the network to its encoder.

::

    upscale_video("clip.mp4", "clip_x4.mp4", model)     # drn-tf upscale clip.mp4 --output out/

Decoding, encoding and muxing run in this process through PyAV, one packet at a time: a
generator yields decoded frames, ``batch_size`` of them at most are held for the network (same-size
frames go through :func:`drn_tf.inference.upscale` together), and each upscaled frame goes
straight to the encoder. Memory is the batch, the encoder's look-ahead and the muxer's
interleaving queue, whatever the clip's length; no frame is written to disk.

What is kept: every frame's timestamp (so variable frame rate, and the duration), the frame
rate, the rotation (display matrix), the colour tags (primaries, transfer, matrix, range) and
the pixel format where the encoder has it (10-bit stays 10-bit with libx264). Audio and
subtitle streams are copied packet for packet, never re-encoded. Corrupt packets are skipped and
counted; the frames around them keep their timestamps.

The file appears under its name only when complete (a temporary name beside it, then a rename).
A run that is stopped leaves nothing; one killed outright leaves a hidden temporary file that
``drn-tf upscale`` removes on its next run, which starts that video over.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from drn_tf.console import check_interrupted
from drn_tf.files import atomic_path
from drn_tf.frames import VideoReadError, decoded_frames, find_videos, is_video, open_video
from drn_tf.inference import Bicubic, OutOfMemoryError, _resolve_model, upscale
from drn_tf.models import DRN
from drn_tf.precision import resolve_precision
from drn_tf.progress import Bar
from drn_tf.tiles import DEFAULT_TILE, DEFAULT_TILE_OVERLAP, Runner, _check_tiles
from drn_tf.upscale_files import UpscaleSummary, upscale_jobs

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CRF",
    "DEFAULT_VIDEO_CODEC",
    "VideoResult",
    "check_video_codec",
    "output_name",
    "upscale_video",
    "upscale_video_files",
]

PathLike = str | os.PathLike[str]

#: The encoder where the container takes it (``.webm`` does not: its own default, VP9).
DEFAULT_VIDEO_CODEC = "libx264"
#: Constant-quality factor: 18 is close to visually lossless for x264 (its own default is 23).
DEFAULT_CRF = 18
#: Frames handed to the network together (fewer when a frame is larger than a tile).
DEFAULT_BATCH_SIZE = 8

# Encoders with a constant-quality `crf` option; others get a constant quantiser.
_CRF_ENCODERS = {
    "libx264",
    "libx264rgb",
    "libx265",
    "libvpx",
    "libvpx-vp9",
    "libaom-av1",
    "libsvtav1",
}
_QP2LAMBDA = 118  # FFmpeg's FF_QP2LAMBDA: global_quality is a quantiser in lambda units

# Streams copied as they are; data streams (timecodes) and attachments are left out.
_COPIED = ("audio", "subtitle")


@dataclasses.dataclass
class VideoResult:
    """What :func:`upscale_video` wrote: frames encoded, packets of the input skipped as
    corrupt, streams copied, and notes for the user (odd sizes, 8-bit conversion, …)."""

    destination: Path
    frames: int
    skipped: int = 0
    copied: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)


def upscale_video(
    src: PathLike,
    dst: PathLike,
    model: DRN | Bicubic | PathLike = "default",
    *,
    tile: int | None = DEFAULT_TILE,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    self_ensemble: bool = False,
    precision: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    video_codec: str | None = None,
    crf: int = DEFAULT_CRF,
    overwrite: bool = False,
    progress: bool = True,
    network: Runner | None = None,
) -> VideoResult:
    """Upscales the video ``src`` into ``dst``, frame by frame, keeping its other streams.

    Args:
        src: a video file any FFmpeg demuxer reads (its first video stream is upscaled).
        dst: the file to write; its suffix picks the container (normally ``src``'s).
        model, tile, tile_overlap, self_ensemble, precision, network: as
            :func:`drn_tf.upscale`.
        batch_size: frames decoded ahead and upscaled together.
        video_codec: an FFmpeg encoder; default :data:`DEFAULT_VIDEO_CODEC` where the
            container takes it, else the container's own default.
        crf: constant-quality factor for encoders that have one (x264/x265/VP9/AV1; lower is
            better and larger); a note says when the encoder has none.
        overwrite: replace ``dst`` if it exists.
        progress: a tqdm bar with frames/s and the time left (stderr).

    Returns:
        A :class:`VideoResult`. Output frames are ``s·W × s·H`` (``s`` the model's scale), with
        the input's timestamps, rate, rotation and colour tags. Sides that 4:2:0 (4:2:2) cannot
        hold, odd ones after a ×3 bicubic, lose their last pixel row/column (noted). 10-bit
        (12-bit) input stays 10-bit (12-bit) where the encoder has that format, else is
        converted to 8-bit (noted).

    Raises:
        FileNotFoundError: ``src`` does not exist.
        FileExistsError: ``dst`` exists and not ``overwrite``.
        VideoReadError: not a video, no video stream, or no frame decodes.
        ValueError: a bad setting, an encoder FFmpeg does not have or the container refuses.
        OutOfMemoryError: a frame does not fit in memory; the message suggests a smaller tile.
    """
    src, dst = Path(src), Path(dst)
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    _check_tiles(tile, tile_overlap)
    resolve_precision(precision)
    check_video_codec(video_codec)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst}: exists (overwrite replaces it)")
    if dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: the output would replace its input")
    model = _resolve_model(model)
    settings = {
        "tile": tile,
        "tile_overlap": tile_overlap,
        "self_ensemble": self_ensemble,
        "precision": precision,
        "network": network,
    }
    with open_video(src) as (source, video):
        copied = [s for s in source.streams if s.type in _COPIED]
        left_out = [s.type for s in source.streams if s is not video and s not in copied]
        remux = _Remux()
        skipped = [0]
        frames = decoded_frames(source, video, skipped, copied, remux)
        first = next(frames, None)
        if first is None:
            raise VideoReadError(f"{src}: no video frame could be decoded (empty or corrupt)")
        with atomic_path(dst) as temp, av.open(str(temp), "w") as sink:
            encoder = _Encoder(sink, source, video, first, model.scale, video_codec, crf)
            remux.start(
                sink, {s.index: sink.add_stream_from_template(s, opaque=True) for s in copied}
            )
            total = video.frames or _estimated_frames(video, source)
            bar = Bar(total=total, desc=src.name, unit="frame", disable=not progress)
            with bar:
                for batch in _batches(itertools.chain([first], frames), batch_size):
                    try:
                        pixels = upscale([encoder.pixels(f) for f in batch], model, **settings)
                    except OutOfMemoryError as error:
                        raise OutOfMemoryError(f"{src}: {error}") from error
                    for frame, upscaled in zip(batch, pixels, strict=True):
                        encoder.encode(frame, upscaled)
                    bar.update(len(batch))
                    check_interrupted()  # a Ctrl-C that FFmpeg's code swallowed
                encoder.finish()
            check_interrupted()
    notes, skipped = encoder.notes, skipped[0] + encoder.dropped
    if left_out:
        notes.append(f"{len(left_out)} stream(s) not copied ({', '.join(sorted(set(left_out)))})")
    if skipped:
        notes.append(f"{skipped} corrupt frame(s) skipped; the others keep their timing")
    return VideoResult(dst, encoder.frames, skipped, len(copied), notes)


class _Remux:
    """Copies packets of the audio and subtitle streams into the output as they are demuxed;
    those that come before the output is set up (before the first video frame) wait."""

    def __init__(self) -> None:
        self.pending: list[av.Packet] = []
        self.sink: av.container.OutputContainer | None = None
        self.outputs: dict[int, av.stream.Stream] = {}

    def __call__(self, packet: av.Packet) -> None:
        if packet.dts is None:  # the demuxer's empty end-of-stream packet
            return
        if self.sink is None:
            self.pending.append(packet)
            return
        packet.stream = self.outputs[packet.stream.index]
        self.sink.mux(packet)

    def start(self, sink: av.container.OutputContainer, outputs: dict) -> None:
        self.sink, self.outputs = sink, outputs
        for packet in self.pending:
            self(packet)
        self.pending = []


class _Encoder:
    """The output video stream: set up from the first decoded frame, then fed upscaled frames."""

    def __init__(
        self,
        sink: av.container.OutputContainer,
        source: av.container.InputContainer,
        video: av.VideoStream,
        first: av.VideoFrame,
        scale: int,
        codec_name: str | None,
        crf: int,
    ) -> None:
        self.sink, self.time_base, self.notes = sink, video.time_base, []
        self.frames, self.dropped, self.last_pts = 0, 0, None
        name = codec_name or _default_codec(sink)
        check_video_codec(name)
        codec = av.Codec(name, "w")
        if name not in sink.supported_codecs and codec.name not in sink.supported_codecs:
            raise ValueError(
                f"{sink.format.name} files cannot hold {name} video (--video-codec picks another)"
            )
        self.pix_fmt = _pixel_format(codec, first.format, self.notes)
        self.rgb = "rgb48le" if _bits(self.pix_fmt) > 8 else "rgb24"
        width, height = first.width * scale, first.height * scale
        layout = av.VideoFormat(self.pix_fmt, 2, 2)
        self.width = width - width % 2 * (layout.chroma_width() == 1)
        self.height = height - height % 2 * (layout.chroma_height() == 1)
        if (self.width, self.height) != (width, height):
            self.notes.append(
                f"odd size {width}x{height}: written as {self.width}x{self.height} "
                f"({self.pix_fmt} needs even sides; the last row/column is dropped)"
            )
        rate = video.average_rate or video.guessed_rate or Fraction(24)
        if codec.name in _CRF_ENCODERS:
            options = {"crf": str(crf)}
        else:  # MPEG-4 part 2 and the like: a constant quantiser, near their best
            options = {"flags": "+qscale", "global_quality": str(2 * _QP2LAMBDA)}
            self.notes.append(f"{codec.name} has no crf: constant quantiser 2 instead")
        self.stream = sink.add_stream(name, rate=rate, options=options)
        context = self.stream.codec_context
        context.width, context.height, context.pix_fmt = self.width, self.height, self.pix_fmt
        # The input's clock, so every frame keeps its timestamp (variable frame rate too).
        context.time_base = self.stream.time_base = video.time_base
        if video.sample_aspect_ratio:
            context.sample_aspect_ratio = video.sample_aspect_ratio
        self.colour = {"color_primaries": first.color_primaries, "color_trc": first.color_trc}
        if not first.format.is_rgb:  # an RGB codec's (PNG's) frames have no YUV matrix or range
            self.colour |= {"colorspace": first.colorspace, "color_range": first.color_range}
        for key, value in self.colour.items():
            setattr(context, key, value)
        matrix = first.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
        if matrix is not None:
            self.stream.set_display_matrix(np.frombuffer(bytes(matrix), "<i4").tolist())
        self.stream.metadata.update(
            {k: v for k, v in video.metadata.items() if k in ("language", "title", "handler_name")}
        )
        sink.metadata.update(source.metadata)

    def pixels(self, frame: av.VideoFrame) -> np.ndarray:
        """A decoded frame as RGB: uint8, or uint16 for a deep output format."""
        return frame.to_ndarray(format=self.rgb, src_color_range=frame.color_range)

    def encode(self, frame: av.VideoFrame, pixels: np.ndarray) -> None:
        """Encodes ``pixels``, the upscaled ``frame``, at ``frame``'s time."""
        if frame.pts is not None and self.last_pts is not None and frame.pts <= self.last_pts:
            self.dropped += 1  # corrupt data decoded into a frame out of time
            return
        pixels = np.ascontiguousarray(pixels[: self.height, : self.width])
        output = av.VideoFrame.from_ndarray(pixels, self.rgb).reformat(
            format=self.pix_fmt,
            dst_colorspace=self.colour.get("colorspace"),
            dst_color_range=self.colour.get("color_range"),
        )
        if frame.pts is not None:
            output.pts, output.time_base, self.last_pts = frame.pts, self.time_base, frame.pts
        self.sink.mux(self.stream.encode(output))
        self.frames += 1

    def finish(self) -> None:
        """Flushes the encoder (the frames of its look-ahead)."""
        self.sink.mux(self.stream.encode(None))


def _default_codec(sink: av.container.OutputContainer) -> str:
    """:data:`DEFAULT_VIDEO_CODEC` where the container holds it with its timestamps, else the
    container's own (WebM: VP9; AVI: MPEG-4, as H.264 in AVI plays a frame late)."""
    if sink.format.name != "avi" and DEFAULT_VIDEO_CODEC in sink.supported_codecs:
        return DEFAULT_VIDEO_CODEC
    return sink.default_video_codec


def _bits(pix_fmt: str) -> int:
    return max(c.bits for c in av.VideoFormat(pix_fmt).components)


def _pixel_format(codec: av.Codec, source: av.VideoFormat, notes: list[str]) -> str:
    """The input's YUV format where the encoder has it, else 4:2:0 at the input's depth (10
    bits for deeper input), else 8-bit 4:2:0, else the encoder's first format."""
    offered = [f.name for f in codec.video_formats or ()]
    deep = _bits(source.name) > 8
    same = source.name.replace("yuvj", "yuv")  # yuvj* is yuv* at full range, tagged apart
    candidates = [same] if same.startswith("yuv4") else []
    candidates += ["yuv420p10le"] * deep + ["yuv420p"]
    chosen = next((c for c in candidates if not offered or c in offered), offered[0])
    if deep and _bits(chosen) <= 8:
        notes.append(
            f"{_bits(source.name)}-bit video converted to 8-bit {chosen} "
            f"({codec.name} has no deeper format)"
        )
    return chosen


def _estimated_frames(video: av.VideoStream, source: av.container.InputContainer) -> int | None:
    """Frames of a stream whose container does not count them (Matroska, WebM), for the bar."""
    rate = video.average_rate or video.guessed_rate
    if rate and source.duration:
        return round(source.duration / av.time_base * rate)
    return None


def _batches(frames: Iterable[av.VideoFrame], size: int) -> Iterator[list[av.VideoFrame]]:
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def output_name(source: Path, scale: int) -> str:
    """``clip.mp4`` → ``clip_x4.mp4``: how video outputs are named, and recognised in inputs."""
    return f"{source.stem}_x{scale}{source.suffix}"


def check_video_codec(name: str | None) -> None:
    """Raises ValueError unless ``name`` is ``None`` (the default) or a video encoder of this
    FFmpeg (PyAV's)."""
    if name is None:
        return
    try:
        codec = av.Codec(name, "w")
    except av.codec.codec.UnknownCodecError:
        raise ValueError(f"no video encoder {name!r} in this FFmpeg (PyAV's)") from None
    if codec.type != "video":
        raise ValueError(f"{name!r} is an {codec.type} encoder, not a video one")


def upscale_video_files(
    inputs: Iterable[PathLike],
    output: PathLike,
    model: DRN | Bicubic | PathLike = "default",
    *,
    overwrite: bool = False,
    progress: bool = True,
    **settings,
) -> UpscaleSummary:
    """Upscales video files and the videos in folders, each on its own: a failure is reported
    and the others still get done.

    ``clip.mp4`` becomes ``output/clip_x4.mp4``; a folder is searched recursively for files
    with a video suffix (:data:`drn_tf.frames.VIDEO_EXTENSIONS`) and keeps its layout:
    ``folder/a/clip.mkv`` becomes ``output/a/clip_x4.mkv``. Videos in input folders named like
    outputs (``*_x4.mp4``) are taken for earlier outputs and skipped. With one input video, an
    ``output`` with a video suffix is the file to write. An existing output is kept unless
    ``overwrite``; an input is never overwritten.

    Args:
        inputs: video files and/or folders.
        output: destination folder (created if needed), or a video file for a single input.
        model: as :func:`drn_tf.upscale`.
        overwrite: replace existing outputs.
        progress: a progress bar per video, with frames/s and the time left (stderr); failures
            and notes are printed on stderr either way.
        settings: ``tile``, ``tile_overlap``, ``self_ensemble``, ``precision``, ``network``,
            ``batch_size``, ``video_codec``, ``crf``, as :func:`upscale_video`.

    Returns:
        An :class:`~drn_tf.upscale_files.UpscaleSummary` of videos.

    Raises:
        ValueError: no video files in the inputs, or a bad setting (checked before any work).
    """
    inputs, output = [Path(p) for p in inputs], Path(output)
    check_video_codec(settings.get("video_codec"))
    model = _resolve_model(model)
    summary = UpscaleSummary(output, unit="video")
    if is_video(output) and not output.is_dir():
        jobs = [(inputs[0], output)]
    else:
        jobs = []
        for item in inputs:
            for found in find_videos(item) if item.is_dir() else [item]:
                if item.is_dir() and found.stem.endswith(f"_x{model.scale}"):
                    summary.earlier_outputs.append(found)
                    continue
                folder = found.relative_to(item).parent if item.is_dir() else Path()
                jobs.append((found, output / folder / output_name(found, model.scale)))
    if not jobs:
        raise ValueError("no video files found in the inputs")

    def upscale_one(source: Path, destination: Path) -> list[str]:
        return upscale_video(
            source, destination, model, overwrite=True, progress=progress, **settings
        ).notes

    errors = (OutOfMemoryError, OSError, ValueError, av.FFmpegError)
    upscale_jobs(jobs, summary, upscale_one, errors, overwrite=overwrite, bar=False)
    return summary
