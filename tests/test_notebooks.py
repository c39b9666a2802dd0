"""The example notebooks (examples/*.ipynb): stored without outputs, and each runs end to end.

Execution uses the notebook's quick mode (``DRN_TF_FAST=1``) in a kernel of this Python (the
venv's), registered in a temporary folder, with a temporary working directory, so nothing is
written into the repository or the user's Jupyter folders.
"""

import sys
import time
from pathlib import Path

import nbclient
import nbformat
import pytest
from helpers import SHARED
from ipykernel import kernelspec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
KERNEL = "drn-tf-tests"
FAST_LINE = 'FAST = os.environ.get("DRN_TF_FAST") == "1"'

# What each notebook must leave in its working directory: proof that it ran there and did its
# job (a notebook missing here fails, so a new one gets an entry).
EXPECTED_FILES = {
    "1_quick_start.ipynb": ["demo_output/chelsea_x4.png"],
    "2_training.ipynb": ["runs/notebook/best.keras", "runs/notebook/model.keras"],
    "3_adaptation.ipynb": ["runs/adapt_notebook/model.keras"],
    "4_deployment.ipynb": [
        "runs/exported/saved_model/1/saved_model.pb",
        "runs/exported/drn_none.tflite",
        "runs/exported/openvino_fp32/model.xml",
    ],
    "5_video.ipynb": ["runs/video/clip_x4.mp4", "runs/video_adapt/model.keras"],
}


def _names(notebooks: list[Path]) -> list[str]:
    return [path.name for path in notebooks]


def test_every_notebook_is_there():
    """The README's notebooks, each with its expected files (a new one needs an entry)."""
    assert set(_names(NOTEBOOKS)) == set(EXPECTED_FILES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_names(NOTEBOOKS))
def test_stored_without_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        number
        for number, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_names(NOTEBOOKS))
def test_has_a_fast_parameters_cell(path: Path):
    """papermill's ``parameters`` tag marks the cell that holds the quick-mode switch."""
    notebook = nbformat.read(path, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    assert FAST_LINE in tagged[0].source


@pytest.fixture(scope="session")
def jupyter_dir(tmp_path_factory) -> Path:
    """A Jupyter data folder holding one kernel spec: this Python running ipykernel."""
    prefix = tmp_path_factory.mktemp("jupyter")
    kernelspec.install(kernel_name=KERNEL, prefix=str(prefix))
    return prefix / "share" / "jupyter"


def _tree(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_names(NOTEBOOKS))
def test_runs_end_to_end(path: Path, jupyter_dir: Path, tmp_path: Path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("DRN_TF_FAST", "1")
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_dir))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    if (SHARED / "data").is_dir():
        monkeypatch.setenv("DRN_TF_DATA", str(SHARED / "data"))
    else:  # the notebooks then say so and use the bundled photo
        monkeypatch.delenv("DRN_TF_DATA", raising=False)
    before = _tree(EXAMPLES)
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=KERNEL,
        timeout=600,
        startup_timeout=120,
        resources={"metadata": {"path": str(work)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    seconds = time.perf_counter() - start
    sys.stderr.write(f"{path.name}: {seconds:.1f} s in quick mode\n")

    # In its working directory, not beside the notebook; no file appears in examples/.
    missing = [name for name in EXPECTED_FILES[path.name] if not (work / name).is_file()]
    assert not missing, f"{path.name} did not write {missing} in its working directory"
    assert _tree(EXAMPLES) == before
    # The pictures were drawn inline (matplotlib's inline backend in the kernel).
    pictures = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert pictures, f"{path.name} showed no picture"
