"""The docs' example responses are what the shipped model answers.

``docs/deployment.md`` shows TF Serving requests with the response a user should see; a
retrained packaged model changes those numbers, so they are read from the page and recomputed
here through the same serving functions the SavedModel signatures export.
"""

import json
import re

import numpy as np
import pytest

import drn_tf
from drn_tf import serving
from tests.helpers import ROOT

PAGE = ROOT / "docs" / "deployment.md"
# A curl line with an inline JSON body, then the shown response on its "# → " line.
EXAMPLE = re.compile(r"-d \\\n\s*'(?P<body>\{.*?\})'\n# → (?P<reply>.*)\n")


def examples() -> list[tuple[dict, str]]:
    found = [(json.loads(m["body"]), m["reply"]) for m in EXAMPLE.finditer(PAGE.read_text())]
    assert len(found) == 3, "docs/deployment.md shows uint8, float and columnar examples"
    return found


def shown_pixels(reply: str) -> np.ndarray:
    """The first row's pixels the page shows, before its ``…``."""
    first = reply.split("…")[0]
    triples = re.findall(r"\[([\d.]+), ([\d.]+), ([\d.]+)\]", first)
    return np.array(triples, dtype=np.float64)


@pytest.fixture(scope="module")
def shipped():
    return drn_tf.load_model("default")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_rest_examples_match_the_shipped_model(shipped, index):
    body, reply = examples()[index]
    shown = shown_pixels(reply)
    assert len(shown) >= 2
    images = np.array(body["instances"] if "instances" in body else body["inputs"]["images"])
    if body.get("signature_name") == "serving_uint8":
        got = serving.super_resolve_uint8(shipped, images.astype(np.uint8)).numpy()
        np.testing.assert_array_equal(got[0, 0, : len(shown)], shown)
    else:
        got = serving.super_resolve(shipped, images.astype(np.float32)).numpy()
        np.testing.assert_allclose(got[0, 0, : len(shown)], shown, atol=2e-3)
