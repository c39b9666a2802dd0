"""The main job of ``make demo``: super-resolve the bundled sample photo and show the result.

The photo is taken as ground truth, downscaled ×s with MATLAB bicubic (the standard SR
degradation), then upscaled back with the model and with bicubic. Both are scored (Y-PSNR and
SSIM, ``s`` pixels shaved) and drawn side by side with zoomed crops. ``make demo`` does this
with each packaged model (×2, ×4, ×8).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from drn_tf.bundled import SAMPLE_IMAGE
from drn_tf.degrade import imresize, modcrop
from drn_tf.images import read_image, write_image
from drn_tf.inference import upscale
from drn_tf.loading import load_model
from drn_tf.metrics import psnr_y, ssim_y


def comparison_picture(
    panels: list[tuple[str, np.ndarray]], crop_box: tuple[int, int, int, int], zoom: int = 3
) -> np.ndarray:
    """Draws labelled panels side by side, with a zoomed crop of each below it.

    Args:
        panels: ``(label, uint8 (H, W, 3))`` pairs, all the same size.
        crop_box: ``(top, left, height, width)`` of the region to zoom, outlined in red above.
        zoom: nearest-neighbour magnification of the crops.

    Returns:
        uint8 ``(H', W', 3)`` picture.
    """
    top, left, height, width = crop_box
    label_height, gap = 18, 6
    image_h, image_w = panels[0][1].shape[:2]
    crop_w = width * zoom
    column_w = max(image_w, crop_w)
    canvas = Image.new(
        "RGB",
        (len(panels) * (column_w + gap) - gap, label_height + image_h + gap + height * zoom),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    for i, (label, image) in enumerate(panels):
        x = i * (column_w + gap)
        draw.text((x + 2, 2), label, fill="black")
        canvas.paste(Image.fromarray(image), (x, label_height))
        y = label_height + top
        draw.rectangle((x + left, y, x + left + width, y + height), outline="red", width=2)
        crop = Image.fromarray(image[top : top + height, left : left + width])
        crop = crop.resize((crop_w, height * zoom), Image.Resampling.NEAREST)
        canvas.paste(crop, (x, label_height + image_h + gap))
    return np.asarray(canvas)


def run_demo(
    output_dir: str | Path,
    model: str = "default",
    scale: int | None = None,
    image_path: str | Path = SAMPLE_IMAGE,
) -> dict:
    """Runs the demo with ``model`` (``"default"``: the packaged model of ``scale``, ×4 when
    ``None``; or a ``.keras`` path, whose scale ``scale`` must be if given).

    Writes ``<name>_x{s}.png`` and ``comparison_x{s}.png`` into ``output_dir``. Returns
    ``{"scale": s, "drn": {"psnr", "ssim"}, "bicubic": {...}, "files": [...]}``.
    """
    drn = load_model(model, scale=scale)
    scale = drn.scale
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    hr = modcrop(read_image(image_path), scale)
    lr = imresize(hr, 1 / scale)
    results = {"scale": scale}
    panels = [("bicubic", imresize(lr, scale)), ("DRN", upscale(drn, lr)), ("ground truth", hr)]
    for label, sr in panels[:2]:
        results["drn" if label == "DRN" else label] = {
            "psnr": psnr_y(sr, hr, shave=scale),
            "ssim": ssim_y(sr, hr, shave=scale),
        }
    name = Path(image_path).stem
    sr_path = output_dir / f"{name}_x{scale}.png"
    write_image(sr_path, panels[1][1])
    # A detailed, high-frequency region (the cat's eye and fur on the sample).
    height, width = hr.shape[:2]
    crop = (height // 3, width // 3, min(64, height // 3), min(96, width // 3))
    picture = comparison_picture(
        [
            (f"{label}" + (f" {results[key]['psnr']:.2f} dB" if key in results else ""), image)
            for (label, image), key in zip(panels, ("bicubic", "drn", "hr"), strict=True)
        ],
        crop,
    )
    comparison_path = output_dir / f"comparison_x{scale}.png"
    write_image(comparison_path, picture)
    results["files"] = [str(sr_path), str(comparison_path)]
    return results
