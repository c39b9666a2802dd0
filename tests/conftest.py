"""Fixtures shared by several test modules."""

import os
from pathlib import Path

import keras
import pytest
from helpers import make_clip

import drn_tf
from drn_tf.models import DRN, save_model_atomic


@pytest.fixture(scope="session", autouse=True)
def runtime_cache(tmp_path_factory) -> Path:
    """Models converted by ``--runtime`` (export.runtime) go to a folder of the test session,
    for this process and the drn-tf processes it starts, never to the user's cache."""
    folder = tmp_path_factory.mktemp("runtime_cache")
    os.environ["DRN_TF_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tuple[DRN, Path]:
    """A tiny ×4 DRN (1 RCAB per phase, 4 features), in memory and saved as .keras."""
    keras.utils.set_random_seed(0)
    model = drn_tf.build_drn_bundle("drn-s", 4, n_blocks=1, n_feats=4)
    path = save_model_atomic(model, tmp_path_factory.mktemp("model") / "tiny.keras")
    return model, path


@pytest.fixture(scope="session")
def tiny_x2(tmp_path_factory) -> Path:
    """A tiny ×2 DRN saved as .keras (with :func:`tiny`, a second packaged scale in tests)."""
    model = drn_tf.build_drn_bundle("drn-s", 2, n_blocks=1, n_feats=4)
    return save_model_atomic(model, tmp_path_factory.mktemp("model_x2") / "tiny_x2.keras")


@pytest.fixture
def float32_policy():
    """Every test starts and ends under the float32 policy (``train`` sets it globally)."""
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def default_source():
    """The packaged ×4 model as an export source (loaded once)."""
    from export import base

    return base.load_source("default")


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """24 frames of 48x32, AAC audio, rotated 90 degrees, BT.709 tags."""
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", rotation=90)
