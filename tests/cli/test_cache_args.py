"""The step cache flags: defaults, values passed through, and bad values refused before loading."""

from __future__ import annotations

import pytest

from wan_runtime.cache import CacheConfig
from wan_runtime.cli_args import resolve
from wan_runtime.cli_parser import build_parser
from wan_runtime.generate import main

pytestmark = pytest.mark.usefixtures("no_pipelines")


def _resolve(*argv: str):
    return resolve(build_parser().parse_args(["--demo", *argv]))


def test_defaults_are_off_with_the_documented_values():
    assert _resolve().cache == CacheConfig()
    assert not CacheConfig().enabled


def test_given_values_are_kept():
    cache = _resolve(
        "--teacache", "--teacache_thresh", "0.2", "--teacache_policy", "poly", "--teacache_warmup", "3",
        "--teacache_last_steps", "0", "--teacache_alternating", "--fbcache", "--fb_thresh", "0.1",
        "--fb_metric", "hidden_rel_l2", "--fb_downsample", "4", "--fb_ema", "0.5", "--fb_warmup", "2",
        "--fb_last_steps", "2", "--fb_cfg_sep_diff", "false",
    ).cache
    assert cache == CacheConfig(
        teacache=True, teacache_thresh=0.2, teacache_policy="poly", teacache_warmup=3, teacache_last_steps=0,
        teacache_alternating=True, fbcache=True, fb_thresh=0.1, fb_metric="hidden_rel_l2", fb_downsample=4,
        fb_ema=0.5, fb_warmup=2, fb_last_steps=2, fb_cfg_sep_diff=False,
    )


def test_every_bad_value_is_listed_with_exit_2(capsys):
    argv = ["--demo", "--teacache", "--fbcache", "--teacache_thresh", "-1", "--fb_ema", "1",
            "--fb_downsample", "0", "--fb_warmup", "-2", "--fb_metric", "l3"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    expected = ["--teacache_thresh must be a number >= 0", "--fb_ema must be in [0, 1)",
                "--fb_downsample must be an integer >= 1", "--fb_warmup must be an integer >= 0",
                "unknown --fb_metric 'l3'"]
    assert len(lines) == len(expected)
    assert all(want in line for want, line in zip(expected, lines, strict=True)), lines


@pytest.mark.parametrize("policy", ["POLY", "cubic"])
def test_unknown_policy_is_refused_before_loading(policy, capsys):
    assert main(["--demo", "--teacache", "--teacache_policy", policy]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"error: unknown --teacache_policy '{policy}' (choose linear or poly)"


@pytest.mark.parametrize("task", ["i2v-A14B", "s2v-14B"])
def test_poly_without_fitted_coefficients_is_refused_before_loading(task, capsys):
    assert main(["--demo", "--task", task, "--teacache", "--teacache_policy", "poly"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        f"error: --teacache_policy poly has no fitted coefficients for {task}; tasks with fitted "
        f"coefficients: ti2v-5B (use --teacache_policy linear for {task})"
    )


def test_poly_is_accepted_where_fitted():
    assert _resolve("--teacache", "--teacache_policy", "poly").cache.teacache_policy == "poly"


def test_settings_of_a_cache_that_is_off_are_refused(capsys):
    argv = ["--demo", "--task", "i2v-A14B", "--teacache_warmup", "2", "--fb_ema", "0.5", "--teacache"]
    assert main(argv) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == "error: --fb_ema has no effect without --fbcache; add --fbcache or drop it"
