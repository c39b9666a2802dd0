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
    upscale_one: Callable[[Path, Path], list[str]],
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
    """
    # realpath, not Path.resolve: a symlink loop must fail its own file, not the whole run.
    sources = {Path(os.path.realpath(source)) for source, _ in jobs}
    claimed: dict[Path, Path] = {}
    for source, destination in Bar(jobs, desc="upscale", unit=summary.unit, disable=not bar):
        target = Path(os.path.realpath(destination))
        if target in sources:
            summary.fail(source, f"its output {destination} would replace an input file")
            continue
        if target in claimed:
            summary.fail(source, f"{claimed[target]} has the same output {destination}")
            continue
        claimed[target] = source
        if destination.exists() and not overwrite:
            summary.kept.append(destination)
            continue
        try:
            notes = upscale_one(source, destination)
        except errors as error:
            if is_disk_full(error):
                # The error names no file, and the source is not the one that failed.
                reason = f"cannot write {destination}: no space left on device"
            else:
                reason = str(error).removeprefix(f"{source}: ")
            summary.fail(source, reason)
            continue
        summary.written.append(destination)
        for note in notes:
            Bar.write(f"note {destination}: {note}", file=sys.stderr)


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
    input is never overwritten; an existing output is kept unless ``overwrite``.

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
        ValueError: no image files in the inputs, or a bad setting.
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
    if not jobs:
        raise ValueError("no image files found in the inputs")

    def upscale_image(source: Path, destination: Path) -> list[str]:
        picture = load_picture(source)
        pixels = upscale(
            picture.pixels, model, tile=tile, tile_overlap=tile_overlap,
            self_ensemble=self_ensemble, precision=precision, progress=progress,
            network=network,
        )  # fmt: skip
        notes = save_picture(destination, Picture(pixels, picture.icc_profile), image_format)
        if picture.frames > 1:  # animations and multi-page files: the first frame only
            notes.append(f"only the first of its {picture.frames} frames was upscaled")
        return notes

    errors = (ImageReadError, OutOfMemoryError, OSError, ValueError)
    upscale_jobs(jobs, summary, upscale_image, errors, overwrite=overwrite, bar=progress)
    return summary
