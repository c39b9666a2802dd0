"""Tests for the package as others meet it: setup.py's ranges and the tested constraints, the
licence and the model card, ``import drn_tf`` registering the Keras classes, the console
script's start-up."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, SET5, SHARED, SUBPROCESS_ENV, run_python, tiny_config
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from drn_tf.bundled import DEFAULT_MODEL_PATHS, FAST_MODEL_PATHS

#: Every packaged file by (name, scale): the default models and the fast tier.
PACKAGED = [("default", s) for s in sorted(DEFAULT_MODEL_PATHS)] + [
    ("fast", s) for s in sorted(FAST_MODEL_PATHS)
]

SETUP = ROOT / "setup.py"
CONSTRAINTS = ROOT / "constraints.txt"
MODEL_CARD = ROOT / "MODEL_CARD.md"
# Extras that `make` installs from constraints.txt; `gpu` and `compare` are not installed there.
TESTED_EXTRAS = ("cpu", "test", "export")


def setup_arguments() -> dict:
    """The literal keyword arguments of setup.py's ``setup(...)`` call."""
    tree = ast.parse(SETUP.read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup"
    ]
    assert len(calls) == 1
    return {
        k.arg: ast.literal_eval(k.value)
        for k in calls[0].keywords
        if isinstance(k.value, (ast.Constant, ast.List, ast.Dict))
    }


def pinned() -> dict[str, Version]:
    """constraints.txt as ``{canonical name: version}``; every line a comment or ``name==v``."""
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==" and not requirement.extras, line
        pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    return pins


# --- ranges and the tested set -------------------------------------------------------------


def test_requirements_are_ranges_and_the_tested_set_lies_inside_them():
    arguments, pins = setup_arguments(), pinned()
    assert "drn-tf" not in pins
    requirements = [Requirement(r) for r in arguments["install_requires"]]
    extras = arguments["extras_require"]
    assert set(TESTED_EXTRAS) <= set(extras)
    tested = requirements + [Requirement(r) for name in TESTED_EXTRAS for r in extras[name]]
    for requirement in tested + [Requirement(r) for r in extras["gpu"] + extras["compare"]]:
        operators = {s.operator for s in requirement.specifier}
        assert operators and not operators & {"==", "===", "~="}, f"not a range: {requirement}"
    for requirement in tested:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside setup.py's {requirement}"
        )
    # The GPU extra is the same TensorFlow release as the tested CPU one.
    (gpu,) = (Requirement(r) for r in extras["gpu"])
    assert gpu.specifier.contains(pins["tensorflow-cpu"])


def test_python_versions_are_those_tensorflow_and_keras_accept():
    from importlib.metadata import distributions

    ours = SpecifierSet(setup_arguments()["python_requires"])
    installed = {canonicalize_name(d.metadata["Name"]): d.metadata for d in distributions()}
    tensorflow = installed.get("tensorflow-cpu") or installed["tensorflow"]
    theirs = [SpecifierSet(m["Requires-Python"]) for m in (installed["keras"], tensorflow)]
    admitted = [f"3.{minor}" for minor in range(8, 16) if ours.contains(f"3.{minor}")]
    # TensorFlow 2.21 ships wheels for 3.10-3.13 (its metadata has no upper bound), Keras 3.15
    # needs 3.11.
    assert admitted == ["3.11", "3.12", "3.13"]
    assert all(spec.contains(version) for spec in theirs for version in admitted)
    assert ours.contains(f"{sys.version_info.major}.{sys.version_info.minor}")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_and_ci_install_the_tested_set_and_run_every_test():
    def commands(target: str) -> str:
        result = subprocess.run(
            ["make", "-n", "-B", target], capture_output=True, text=True, cwd=ROOT, check=True
        )
        return result.stdout

    installs = [line for line in commands(".venv/.installed").splitlines() if "install" in line]
    assert any("-c constraints.txt" in line and ".[cpu,test,export]" in line for line in installs)
    pytest_flags = [
        line.split("pytest", 1)[1].split()
        for line in commands("test").splitlines()
        if "pytest" in line
    ]
    assert pytest_flags and not any({"-m", "-k"} & set(flags) for flags in pytest_flags)
    assert any('-m "not slow"' in line for line in commands("test-fast").splitlines())
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)


# --- licence and model card ----------------------------------------------------------------


def test_licence_is_apache_2():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert setup_arguments()["license"] == "Apache-2.0"


def card_rows() -> dict[str, list[str]]:
    """The model card's table rows by their first cell: ``{"drn_x4.keras": [cells…]}``."""
    rows = {}
    for line in MODEL_CARD.read_text().splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
            rows.setdefault(cells[0], []).append(cells[1:])
    return rows


def test_model_card_describes_each_packaged_file():
    import drn_tf

    rows = card_rows()
    for name, scale in PACKAGED:
        path = (FAST_MODEL_PATHS if name == "fast" else DEFAULT_MODEL_PATHS)[scale]
        model = drn_tf.load_model(path)
        config = model.drn_config
        size, recipe, metrics = rows[path.name]  # the model, recipe and metrics tables
        assert size[0] == f"×{scale}"
        assert size[1] == f"{config.n_blocks} × {config.n_feats}"
        primal = model.primal.count_params()
        duals = sum(dual.count_params() for dual in model.duals)
        assert size[2] == f"{primal:,} + {duals:,}"
        assert size[3] == f"{path.stat().st_size / 1e6:.1f} MB"
        assert "T91 + BSD200" in model.info["training"]
        assert len(recipe) == 5 and len(metrics) == 2


# Y-PSNR (dB) / SSIM as the card writes them: "31.26 / 0.8807".
PSNR_SSIM = re.compile(r"(\d+\.\d{2}) / (0\.\d{4})")
# What a metrics row is about: a packaged file or the bicubic baseline of a scale.
SUBJECT = re.compile(r"[`*]*(drn_(?:fast_)?x\d+\.keras|bicubic ×\d+)")


def card_metrics() -> dict[str, list[tuple[str, str]]]:
    """The card's metrics table: ``{"drn_x4.keras": [(Set5 PSNR, SSIM), (Set14 …)], …}``."""
    return {
        name: [PSNR_SSIM.fullmatch(cell).groups() for cell in tables[-1]]
        for name, tables in card_rows().items()
        if SUBJECT.fullmatch(name)
    }


def test_model_card_metrics_agree_with_the_docs():
    """Every table row of the docs (README.md, docs/*.md) that reports Set5 / Set14 of a
    packaged file or of bicubic says what the model card says."""
    card = card_metrics()
    assert len(card) == 2 * len(DEFAULT_MODEL_PATHS) + len(FAST_MODEL_PATHS)
    found = set()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in doc.read_text().splitlines():
            subject = SUBJECT.match(line.strip("| "))
            numbers = PSNR_SSIM.findall(line)
            if line.startswith("|") and subject and len(numbers) >= 2:
                assert numbers[:2] == card[subject[1]], (doc.name, line)
                found.add(subject[1])
    assert found == set(card), f"the docs report no Set5/Set14 for {set(card) - found}"


@pytest.mark.slow
@pytest.mark.skipif(not SET5.is_dir(), reason=f"benchmark data not found under {SHARED}")
@pytest.mark.parametrize("name, scale", PACKAGED)
def test_model_card_metrics_are_what_the_files_measure(name, scale):
    from drn_tf.evaluation import evaluate
    from drn_tf.loading import load_model

    folders = [SET5, SET5.parent / "Set14"]
    file = f"drn_{'fast_' if name == 'fast' else ''}x{scale}.keras"
    measured = {file: evaluate(load_model(name, scale), folders, scale, False)}
    if name == "default":
        measured[f"bicubic ×{scale}"] = evaluate("bicubic", folders, scale, False)
    card = card_metrics()
    for name, results in measured.items():
        got = [(f"{r['psnr']:.2f}", f"{r['ssim']:.4f}") for r in results.values()]
        assert got == card[name], name


# --- Keras finds drn-tf's classes after `import drn_tf` ------------------------------------


@pytest.fixture(scope="module")
def run_files(tmp_path_factory) -> list[Path]:
    """``best.keras`` of a tiny float32 run and of a tiny mixed_bfloat16 run."""
    from drn_tf.settings import TrainConfig
    from drn_tf.training import train

    files = []
    for precision in ("float32", "mixed_bfloat16"):
        root = tmp_path_factory.mktemp(precision)
        config = tiny_config(root, precision=precision, steps=2)
        train(TrainConfig(**config))
        files.append(Path(config["output"]) / "best.keras")
    return files


LOAD_EACH = """
    import sys
    {imports}
    for path in sys.argv[1:]:
        model = keras.saving.load_model(path)
        print(type(model).__name__, model.drn_config.scale)
"""


IMPORT_ORDERS = [
    "import drn_tf, keras",
    "import keras, drn_tf",
    # Keras loads inside drn_tf's own imports: registering waits for them to finish.
    "from drn_tf.models import DRN; import keras",
    "from drn_tf.inference import upscale; import keras",
]


def load_each(imports: str, paths: list[Path]) -> list[str]:
    """``type(model).__name__ scale`` of each of ``paths`` opened by ``keras.saving.load_model``
    in a fresh Python that ran ``imports``."""
    result = run_python(LOAD_EACH.format(imports=imports), *map(str, paths))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()[-len(paths) :]


@pytest.mark.parametrize(
    "imports", [IMPORT_ORDERS[0], pytest.param(IMPORT_ORDERS[2], marks=pytest.mark.slow)]
)
def test_keras_load_model_opens_the_packaged_models(imports):
    scales = sorted(DEFAULT_MODEL_PATHS)
    loaded = load_each(imports, [DEFAULT_MODEL_PATHS[s] for s in scales])
    assert loaded == [f"DRN {s}" for s in scales]


@pytest.mark.slow
@pytest.mark.parametrize("imports", IMPORT_ORDERS)
def test_keras_load_model_opens_a_float32_and_a_bfloat16_run(run_files, imports):
    assert load_each(imports, run_files) == ["DualRegressionModel 4"] * 2


def test_import_drn_tf_loads_neither_keras_nor_tensorflow():
    result = run_python(
        "import sys, drn_tf\nprint(sorted({'keras', 'tensorflow'} & set(sys.modules)))"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["upscale", "--help"]])
def test_console_script_help_imports_no_tensorflow(argv):
    script = shutil.which("drn-tf", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the drn-tf console script is not installed beside this Python")
    result = subprocess.run(
        [script, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        # Python lists every module it imports, with its import time, on stderr.
        env={**SUBPROCESS_ENV, "PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage: drn-tf" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert "drn_tf.cli" in imported  # the listing is there
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras")}


def test_registering_leaves_other_imports_alone():
    """The finder that waits for Keras answers only for keras, tensorflow and drn_tf modules,
    and the modules it wraps stay ordinary (their source readable)."""
    result = run_python(
        """
        import inspect, sys, drn_tf
        finder = sys.meta_path[0]
        print(type(finder).__name__, finder.find_spec("json"), finder.find_spec("numpy"))
        import drn_tf.files
        print(drn_tf.files.__file__.endswith("files.py"))
        print("def remove_stale_temp_files" in inspect.getsource(drn_tf.files))
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-3:] == ["_RegisterOnceKerasLoads None None", "True", "True"]
