"""Tests for the benchmark commands: their flags, their usage examples, a tiny run of each."""

from __future__ import annotations

import json
import re
import shlex

import numpy as np
import pytest
from PIL import Image

from benchmarks import data_pipeline, precision
from drn_tf.config import parse_config


@pytest.mark.parametrize(
    "module, config_cls",
    [(precision, precision.PrecisionConfig), (data_pipeline, data_pipeline.PipelineConfig)],
)
def test_usage_examples_in_docstrings_parse(module, config_cls):
    text = module.__doc__.replace("\\\n", " ")
    examples = re.findall(rf"python -m {module.__name__}( [^\n]*)", text)
    assert examples, "the docstring shows how to run it"
    for example in examples:
        parse_config(config_cls, shlex.split(example), module.__name__)  # raises on a bad flag


def test_precision_runs_tiny(capsys):
    argv = ["--n-blocks", "1", "--n-feats", "4", "--patch-size", "16", "--batch-size", "2"]
    assert precision.main([*argv, "--steps", "1", "--precisions", "float32"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("drn-s x4 n_blocks=1 n_feats=4 patch=16 batch=2 on ")
    assert len(lines) == 2 and re.match(r"\s*float32: +[\d.]+ ms/step", lines[1])


def test_data_pipeline_runs_tiny(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
    argv = ["--train-dir", str(tmp_path), "--scale", "2", "--patch-size", "16", "--batch-size", "2"]
    assert data_pipeline.main([*argv, "--steps", "2", "--warmup", "1", "--repeats", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["images"], report["skipped"], report["batch_size"]) == (3, 0, 2)
    assert len(report["samples_per_s_all"]) == 1 and report["samples_per_s_median"] > 0


def test_bad_values_are_one_line(capsys):
    assert precision.main(["--steps", "0"]) == 1
    assert capsys.readouterr().err.strip() == (
        "python -m benchmarks.precision: error: --steps must be at least 1, got 0"
    )
    assert precision.main(["--n_blocks", "4"]) == 2  # the old underscore spelling is refused
