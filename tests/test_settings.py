"""Tests for drn_tf.settings: every command's settings, their rules, and no TensorFlow."""

from __future__ import annotations

import pytest
from helpers import run_python

from drn_tf.flags import FlagError, build_parser
from drn_tf.settings import (
    RUNTIMES,
    AdaptConfig,
    ConvertConfig,
    DegradeConfig,
    DemoConfig,
    EvaluateConfig,
    PackageConfig,
    TrainConfig,
    UpscaleConfig,
    check_at_least,
    check_scale_flag,
)

# Each command's settings with its required flags given: all else at the defaults.
GIVEN = [
    UpscaleConfig(output="out"),
    EvaluateConfig(),
    DegradeConfig(hr_dir="Set5", output="Set5"),
    ConvertConfig(checkpoint="DRNS4x.pt", output="m.keras"),
    PackageConfig(model="best.keras", output="m.keras"),
    DemoConfig(),
    TrainConfig(train_dir=["T91"]),
    AdaptConfig(paired_dir=["T91"], unpaired_dir=["photos"]),
]


@pytest.mark.parametrize("settings", GIVEN, ids=[type(s).__name__ for s in GIVEN])
def test_defaults_pass_their_check(settings):
    settings.check()


def test_importing_the_settings_loads_no_tensorflow():
    result = run_python(
        """
        import sys
        import drn_tf.settings
        print(sorted(m for m in ("tensorflow", "keras", "PIL") if m in sys.modules))
        """
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr


@pytest.mark.parametrize(
    "settings, message",
    [
        (UpscaleConfig(), "--output is required"),
        (DegradeConfig(), "--hr-dir and --output are required"),
        (ConvertConfig(output="m.keras"), "--checkpoint is required"),
        (PackageConfig(), "--model and --output are required"),
        (UpscaleConfig(output="o", tile=64, tile_overlap=17), "--tile-overlap 17 is more than"),
        (UpscaleConfig(output="o", crf=64), "--crf must be between 0 and 63 (x264: 0-51), got 64"),
        (
            UpscaleConfig(output="o", runtime="cuda"),
            f"--runtime must be one of {', '.join(RUNTIMES)}",
        ),
        (EvaluateConfig(frames_per_video=0), "--frames-per-video must be at least 1, got 0"),
        (EvaluateConfig(lr_only=True, model="bicubic"), "--lr-only needs a DRN model"),
        (EvaluateConfig(self_ensemble=True, model="bicubic"), "--self-ensemble scores a DRN"),
        (EvaluateConfig(self_ensemble=True, lr_only=True), "--self-ensemble scores a DRN"),
        (DegradeConfig(hr_dir="h", output="o", jpeg_quality=96), "--jpeg-quality must be 1..95"),
        (ConvertConfig(checkpoint="a.pt", output="m.h5"), "--output must name a .keras file"),
        (ConvertConfig(checkpoint="a.pt", output="m.keras", variant="drn-x"), "--variant must be"),
        (ConvertConfig(checkpoint="a.pt", output="m.keras", n_blocks=0), "--n-blocks must be at"),
        (PackageConfig(model="b.keras", output="m"), "--output must name a .keras file, got m"),
        (DemoConfig(scales=[2, 6]), "--scales must be a power of two (2, 4, 8, …), got 6"),
        (AdaptConfig(paired_dir=["p"], unpaired_dir=["u"], frames_per_video=0), "--frames-per"),
        (
            TrainConfig(train_dir=["t"], scale_augment=[0.9, 1.0]),
            "--scale-augment factors must be in (0, 1), got [0.9, 1.0]",
        ),
    ],
)
def test_a_wrong_value_is_one_flag_error_naming_the_flag(settings, message):
    with pytest.raises(FlagError) as error:
        settings.check()
    assert str(error.value).startswith(message)


def test_the_scale_rule_of_drn_and_of_bicubic():
    check_scale_flag(8)
    check_scale_flag(3, power_of_two=False)
    with pytest.raises(FlagError, match=r"^--scale must be a power of two \(2, 4, 8, …\), got 3$"):
        check_scale_flag(3)
    with pytest.raises(FlagError, match=r"^--scales must be an integer of at least 2, got 1$"):
        check_scale_flag(1, power_of_two=False, flag="--scales")


def test_at_least_refuses_nan():
    check_at_least("--dual-weight", 0.0, 0)
    with pytest.raises(FlagError, match="^--dual-weight must be at least 0, got nan$"):
        check_at_least("--dual-weight", float("nan"), 0)


def test_train_and_convert_share_the_model_size_flags():
    def lines(config_cls) -> dict[str, str]:
        """Each flag's help, argparse's wrapping undone."""
        text = build_parser(config_cls, "prog").format_help().split("options:")[1]
        flags = {}
        for part in text.split("\n  -")[1:]:
            flags["-" + part.split()[0]] = " ".join(part.split())
        return flags

    train, convert = lines(TrainConfig), lines(ConvertConfig)
    for flag in ("--variant", "--scale", "--n-blocks", "--n-feats"):
        assert train[flag] == convert[flag], flag
    assert train["--variant"].startswith("-variant {drn-s,drn-l} drn-s or drn-l.")
