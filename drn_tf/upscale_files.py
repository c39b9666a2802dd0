"""Upscaling image files and folders: outputs named and placed, each file on its own.

::

    upscale_files(["photos/"], "out/", model)       # photos/a/b.jpg -> out/a/b_x4.png

A file that fails is named with the reason and the others still get done; outputs are written
atomically, never over an input, and kept when they exist unless asked to overwrite.
:func:`upscale_jobs` is that loop, for videos too (:mod:`drn_tf.video`).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from drn_tf.files import is_disk_full
from drn_tf.images import IMAGE_EXTENSIONS, ImageReadError, find_images
from drn_tf.inference import Bicubic, OutOfMemoryError, _resolve_model, upscale
from drn_tf.models import DRN
from drn_tf.pictures import FORMAT_SUFFIXES, Picture, load_picture, save_picture
from drn_tf.precision import resolve_precision
from drn_tf.progress import Bar
from drn_tf.tiles import DEFAULT_TILE, DEFAULT_TILE_OVERLAP, Runner, _check_tiles

__all__ = ["UpscaleSummary", "is_earlier_output", "output_name", "upscale_files", "upscale_jobs"]

PathLike = str | os.PathLike[str]

#: Outputs of up to this many pixels (a 2000x2000 photo ×4) are written in the background
#: while the next file computes; larger ones in the foreground with nothing else held, as
#: before, so the overlap adds nothing to the peak memory of large photos (≤ 2 GB for a
#: 4000x3000 photo ×4, whose 192-megapixel output takes 576 MB). Below it, the outputs held
#: at once (at most two: one being written, the next just computed) take ≤ 192 MB each in
#: 8-bit RGB.
WRITE_BEHIND_PIXELS = 64_000_000


@dataclasses.dataclass
class UpscaleSummary:
    """What :func:`upscale_files` did: files written, outputs kept because they existed,
    failures ``(input, reason)``, and files in input folders taken for earlier outputs."""

    output: Path
    written: list[Path] = dataclasses.field(default_factory=list)
    kept: list[Path] = dataclasses.field(default_factory=list)
    failed: list[tuple[Path, str]] = dataclasses.field(default_factory=list)
    earlier_outputs: list[Path] = dataclasses.field(default_factory=list)
    unit: str = "image"  # what the files are (drn_tf.video's summaries say "video")

    def line(self) -> str:
        """One line for the user: ``wrote 3 image(s) to out; 1 kept …; 1 failed``."""
        parts = [f"wrote {len(self.written)} {self.unit}(s) to {self.output}"]
        if self.kept:
            parts.append(f"{len(self.kept)} kept (already there; --overwrite replaces them)")
        if self.earlier_outputs:
            parts.append(
                f"{len(self.earlier_outputs)} earlier output(s) in the inputs skipped "
                f"(first: {self.earlier_outputs[0]})"
            )
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        return "; ".join(parts)

    def fail(self, source: Path, reason: str) -> None:
        """Records that ``source`` failed and says so on stderr."""
        self.failed.append((source, reason))
        Bar.write(f"failed {source}: {reason}", file=sys.stderr)


def output_name(source: Path, scale: int, image_format: str) -> str:
    """``photo.jpg`` → ``photo_x4.png``: how outputs are named, and recognised in inputs."""
    return f"{source.stem}_x{scale}{FORMAT_SUFFIXES[image_format]}"


def is_earlier_output(path: Path, output: Path, suffixes: Iterable[str]) -> bool:
    """Whether ``path``, found in an input folder, is taken for an earlier output of this tool:
    named like one (``<stem>_x<n>`` with a suffix of ``suffixes``, any scale ``n``) and either
    inside the ``output`` folder or beside a file ``<stem>.*``, its source. Elsewhere such a
    name (``scan_x4.jpg``) is just a user's photo."""
    stem, _, scale = path.stem.rpartition("_x")
    if not (stem and scale.isdigit() and path.suffix.lower() in suffixes):
        return False
    folder, out = Path(os.path.realpath(path.parent)), Path(os.path.realpath(output))
    if folder == out or out in folder.parents:
        return True
    return any(p.stem == stem and p != path for p in path.parent.glob(glob.escape(stem) + ".*"))


_OUTPUT_SUFFIXES = {*FORMAT_SUFFIXES.values(), ".tiff", ".jpeg"}


def _plan(
    inputs: list[Path], output: Path, scale: int, image_format: str, summary: UpscaleSummary
) -> list[tuple[Path, Path]]:
    """``(source, destination)`` pairs; files of input folders named like outputs are left out
    (recorded in ``summary``), so an output folder inside or above the inputs works."""
    if output.suffix.lower() in IMAGE_EXTENSIONS and not output.is_dir():
        return [(inputs[0], output)]
    jobs = []
    for item in inputs:
        if item.is_dir():
            unreadable: list[tuple[Path, str]] = []
            found_images = find_images(item, unreadable=unreadable)
            for folder, reason in unreadable:
                summary.fail(folder, reason)
            for found in found_images:
                if is_earlier_output(found, output, _OUTPUT_SUFFIXES):
                    summary.earlier_outputs.append(found)
                else:
                    relative = found.relative_to(item).parent
                    jobs.append(
                        (found, output / relative / output_name(found, scale, image_format))
                    )
        else:
            jobs.append((item, output / output_name(item, scale, image_format)))
    return jobs


def upscale_jobs(
    jobs: list[tuple[Path, Path]],
    summary: UpscaleSummary,
    upscale_one: Callable[[Path, Path], list[str] | Future[list[str]]],
    errors: tuple[type[Exception], ...],
    *,
    overwrite: bool,
    bar: bool,
) -> None:
    """Runs ``upscale_one(source, destination)``, which writes ``destination`` and returns
    notes on it, for each job ``(source, destination)`` on its own, recording in ``summary``.

    A job whose output would replace an input, or that another job writes, fails; an existing
    output is kept unless ``overwrite``; ``errors`` raised by ``upscale_one`` fail its job
    alone (a full disk names the destination). ``bar``: a progress bar over the jobs (stderr).
    ``upscale_one`` may instead return a :class:`~concurrent.futures.Future` of the notes, its
    output being written in the background: that job is recorded (written or failed) once the
    next one has run, and before it, so records and messages keep the jobs' order.
    """
    # realpath, not Path.resolve: a symlink loop must fail its own file, not the whole run.
    sources = {Path(os.path.realpath(source)) for source, _ in jobs}
    claimed: dict[Path, Path] = {}

    def run(source: Path, destination: Path) -> tuple[Callable[[], None], bool]:
        """Runs a job; returns what records it, and whether its output is still being written."""
        target = Path(os.path.realpath(destination))
        if target in sources:
            reason = f"its output {destination} would replace an input file"
            return lambda: summary.fail(source, reason), False
        if target in claimed:
            reason = f"{claimed[target]} has the same output {destination}"
            return lambda: summary.fail(source, reason), False
        claimed[target] = source
        if destination.exists() and not overwrite:
            return lambda: summary.kept.append(destination), False
        try:
            outcome = upscale_one(source, destination)
        except errors as error:
            reason = _reason(error, source, destination)
            return lambda: summary.fail(source, reason), False
        return lambda: finish(source, destination, outcome), isinstance(outcome, Future)

    def finish(source: Path, destination: Path, outcome: list[str] | Future[list[str]]) -> None:
        try:
            notes = outcome.result() if isinstance(outcome, Future) else outcome
        except errors as error:
            summary.fail(source, _reason(error, source, destination))
            return
        summary.written.append(destination)
        for note in notes:
            Bar.write(f"note {destination}: {note}", file=sys.stderr)

    with Bar(total=len(jobs), desc="upscale", unit=summary.unit, disable=not bar) as progress:

        def step(record: Callable[[], None]) -> None:
            record()
            progress.update()

        behind: Callable[[], None] | None = None  # records the last job once it is written
        for source, destination in jobs:
            record, later = run(source, destination)
            if behind is not None:
                step(behind)
                behind = None
            if later:
                behind = record
            else:
                step(record)
        if behind is not None:
            step(behind)


def _reason(error: Exception, source: Path, destination: Path) -> str:
    """Why a job failed, in words that name the file at fault."""
    if is_disk_full(error):
        # The error names no file, and the source is not the one that failed.
        return f"cannot write {destination}: no space left on device"
    return str(error).removeprefix(f"{source}: ")


def upscale_files(
    inputs: Iterable[PathLike],
    output: PathLike,
    model: DRN | Bicubic | PathLike = "default",
    *,
    tile: int | None = DEFAULT_TILE,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    self_ensemble: bool = False,
    precision: str = "auto",
    image_format: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    network: Runner | None = None,
) -> UpscaleSummary:
    """Upscales image files and folders, each file on its own: a failure is reported and the
    others still get done.

    ``photo.jpg`` becomes ``output/photo_x4.png``; a folder is searched recursively
    (:func:`drn_tf.images.find_images`) and keeps its layout: ``folder/a/b.jpg`` becomes
    ``output/a/b_x4.png``. Files in input folders named like outputs (``*_x4.png``, …) inside
    ``output`` or beside their source are taken for earlier outputs and skipped
    (:func:`is_earlier_output`), so ``output`` may lie inside or above the inputs.
    With one input file, an ``output`` with an image suffix is the file to write.

    Files keep what they are (:func:`drn_tf.pictures.load_picture`, :func:`save_picture`):
    gray stays gray, alpha is kept (upscaled with bicubic), 16 bits stay 16 bits where the
    format holds them, the ICC profile is carried over. Outputs are written atomically; an
    input is never overwritten; an existing output is kept unless ``overwrite``. An output of
    up to :data:`WRITE_BEHIND_PIXELS` is written by a background thread while the next file
    computes; failures, notes and ``summary`` keep the files' order all the same.

    Args:
        inputs: image files and/or folders.
        output: destination folder (created if needed), or an image file for a single input.
        model, tile, tile_overlap, self_ensemble, precision, network: as
            :func:`drn_tf.inference.upscale`.
        image_format: ``png``, ``jpg``, ``webp`` or ``tiff``; default png, or the suffix of an
            output file.
        overwrite: replace existing outputs.
        progress: tqdm progress bars over the files and over a large image's tiles (stderr);
            failures and notes are printed on stderr either way.

    Returns:
        An :class:`UpscaleSummary`; ``summary.failed`` lists ``(input, reason)``.

    Raises:
        FileNotFoundError: an input does not exist (checked before any work).
        ValueError: no image files in the inputs, or only earlier outputs (the message
            says which), or a bad setting.
    """
    inputs, output = [Path(p) for p in inputs], Path(output)
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: input does not exist")
    _check_tiles(tile, tile_overlap)
    resolve_precision(precision)  # a bad name fails before any work
    names_file = output.suffix.lower() in IMAGE_EXTENSIONS and not output.is_dir()
    by_suffix = {s: f for f, s in FORMAT_SUFFIXES.items()} | {".tiff": "tiff", ".jpeg": "jpg"}
    if output.suffix.lower() in (".bmp", ".gif") and not output.is_dir():
        raise ValueError(
            f"{output}: outputs are .png, .jpg, .webp or .tif files, not {output.suffix}"
        )
    if names_file and (len(inputs) != 1 or inputs[0].is_dir()):
        raise ValueError(f"{output}: an image file name as output takes one input image")
    if image_format is None:
        image_format = by_suffix[output.suffix.lower()] if names_file else "png"
    elif image_format not in FORMAT_SUFFIXES:
        raise ValueError(
            f"format must be one of {', '.join(FORMAT_SUFFIXES)}, got {image_format!r}"
        )
    elif names_file and output.suffix.lower() not in (
        FORMAT_SUFFIXES[image_format],
        ".tiff",
        ".jpeg",
    ):
        raise ValueError(f"{output}: the suffix does not match the format {image_format}")
    model = _resolve_model(model)
    summary = UpscaleSummary(output)
    jobs = _plan(inputs, output, model.scale, image_format, summary)
    if not jobs and summary.earlier_outputs:  # e.g. `drn-tf upscale out/ --output out/`
        found = summary.earlier_outputs
        raise ValueError(
            f"nothing to upscale: the {len(found)} image(s) in the inputs are earlier outputs "
            f"of drn-tf, skipped (named <name>_x<n>, inside {output} or beside their source; "
            f"first: {found[0]})"
        )
    if not jobs:
        raise ValueError("no image files found in the inputs")

    # One thread writes each output while the next file computes (zlib and PIL release the GIL).
    writing: list[Future[list[str]]] = []  # the last output written in the background

    def upscale_image(source: Path, destination: Path) -> list[str] | Future[list[str]]:
        picture = load_picture(source)
        height, width = picture.pixels.shape[:2]
        behind = height * width * model.scale**2 <= WRITE_BEHIND_PIXELS
        if not behind:
            wait(writing)  # a large output computes with nothing else held, as it always did
        pixels = upscale(
            picture.pixels, model, tile=tile, tile_overlap=tile_overlap,
            self_ensemble=self_ensemble, precision=precision, progress=progress,
            network=network,
        )  # fmt: skip
        result = Picture(pixels, picture.icc_profile)
        notes = []
        if picture.frames > 1:  # animations and multi-page files: the first frame only
            notes.append(f"only the first of its {picture.frames} frames was upscaled")

        def save() -> list[str]:
            return save_picture(destination, result, image_format) + notes

        if not behind:
            return save()
        writing[:] = [writer.submit(save)]
        return writing[0]

    errors = (ImageReadError, OutOfMemoryError, OSError, ValueError)
    with ThreadPoolExecutor(1, thread_name_prefix="drn-tf-write") as writer:
        upscale_jobs(jobs, summary, upscale_image, errors, overwrite=overwrite, bar=progress)
    return summary
