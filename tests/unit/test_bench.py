"""``numguard bench``: the table's rows, sums and files. No time is ever asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from numguard.bench import decoder_shapes, render_table, run_bench
from numguard.candidates import resolve
from numguard.cli import EXIT_PASSED, EXIT_UNAVAILABLE, EXIT_USAGE, main

HERE = Path(__file__).parent
# the shortest settings that still take every code path: 32x32 decodes in well
# under a second on a CPU
QUICK = ["--resolution", "32", "--warmup", "1", "--min-run-time", "0.01"]


def test_decoder_shapes_sum_to_the_thirty_calls():
    shapes = decoder_shapes(1024, "bfloat16")
    counts = {case.shape: len(calls) for case, calls in shapes}
    assert sum(counts.values()) == 30
    assert counts[(1, 512, 128, 128)] == 10  # 4 mid-block resnet norms and up_blocks.0
    assert counts[(1, 128, 1024, 1024)] == 6  # up_blocks.3 and conv_norm_out
    assert counts[(1, 512, 16384)] == 1  # the attention norm, rank 3
    assert all(case.dtype == "bfloat16" and case.eps == 1e-6 for case, _ in shapes)


def test_per_image_time_is_each_shape_times_its_calls():
    result = run_bench(resolve("torch"), "cpu", 32, warmup=1, min_run_time=0.01,
                       decode=False)
    assert len(result.shapes) == 7
    expected = sum(len(s.calls) * s.torch.median_ms for s in result.shapes)
    assert result.groupnorm_torch_ms == pytest.approx(expected)
    assert all(s.torch.blocks >= 1 and s.candidate.blocks >= 1 for s in result.shapes)
    table = render_table(result)
    assert "| **GroupNorm per image** | | 30 |" in table
    assert "| **VAE decode** | not timed (--no-decode) |" in table


def test_command_prints_the_table_and_saves_json(tmp_path, capsys, monkeypatch):
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code = main(["bench", "--impl", "torch-channels-last", *QUICK,
                 "--report", str(tmp_path)])
    assert code == EXIT_PASSED
    out = capsys.readouterr().out
    assert "| mid.resnet, up0 | 1x512x4x4 | 10 |" in out
    assert "| **VAE decode** (30 decoder GroupNorms swapped) |" in out
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["candidate"] == "torch-channels-last" and data["resolution"] == 32
    assert data["groupnorm_per_image_ms"]["calls"] == 30
    assert data["decode_candidate"]["median_ms"] > 0
    assert summary.read_text().startswith("numguard bench: torch-channels-last")


def test_a_swap_that_fails_its_preflight_leaves_the_decode_untimed(tmp_path, capsys):
    spec = "numguard.kernels:BesselVarianceGroupNorm"
    assert main(["bench", "--impl", spec, *QUICK, "--report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "not timed: the swap failed: preflight of groups=32" in out
    assert json.loads((tmp_path / "bench.json").read_text())["decode_candidate"] is None


def test_threads_apply_to_the_run_and_are_restored():
    before = torch.get_num_threads()
    result = run_bench(resolve("torch"), "cpu", 8, warmup=0, min_run_time=0.001,
                       decode=False, threads=1)
    assert result.threads == 1 and torch.get_num_threads() == before


@pytest.mark.parametrize("option, message", [
    (["--resolution", "30"], "--resolution 30: must be a positive multiple of 8"),
    (["--threads", "0"], "--threads 0: must be at least 1"),
])
def test_bad_arguments_are_usage_errors(tmp_path, capsys, option, message):
    code = main(["bench", "--impl", "torch", *option, "--report", str(tmp_path)])
    assert code == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_unavailable_candidate_exits_with_its_code(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE / "no_rocm_aiter"))
    monkeypatch.delitem(sys.modules, "aiter", raising=False)
    code = main(["bench", "--impl", "aiter", "--report", str(tmp_path)])
    assert code == EXIT_UNAVAILABLE
    assert "aiter stand-in: no ROCm device found" in capsys.readouterr().err
