"""HTML pages of golden cases: three images side by side, metrics, an index."""

import re

import numpy as np
import pytest
from PIL import Image

from numguard.golden import Comparison, GoldenCase, GoldenResult, image_metrics
from numguard.golden_report import heatmap, prepare_folder, ramp, write_case_page
from numguard.tolerance import ImageThreshold

THRESHOLD = ImageThreshold(100.0, 0.9999, "test")


def result_with(images, passed_golden=True):
    case = GoldenCase(resolution=16, dtype="bfloat16", seed=3)
    result = GoldenResult(case=case, arch="cpu", candidate="torch-compile",
                          golden_arch="cpu", golden_source="own arch", images=images)
    result.kernel = Comparison("the live nn.GroupNorm decode on cpu", THRESHOLD,
                               image_metrics(images["live"], images["candidate"]))
    result.drift = Comparison("the golden (cpu, own arch)", THRESHOLD,
                              image_metrics(images["golden"], images["candidate"]))
    return result


@pytest.fixture
def images():
    golden = np.random.default_rng(1).random((16, 16, 3), dtype=np.float32)
    candidate = golden.copy()
    candidate[4:8, 4:8] += np.float32(0.01)
    return {"golden": golden, "candidate": candidate, "live": golden.copy()}


def test_page_shows_golden_candidate_and_diff_with_metrics(tmp_path, images):
    result = result_with(images)
    page = write_case_page(tmp_path, result)
    text = page.read_text()
    assert page.name == "zimage-synthetic-decode-r16-bfloat16-s3.html"
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert sources[:4] == [f"zimage-synthetic-decode-r16-bfloat16-s3-{kind}.png"
                           for kind in ("golden", "candidate", "diff", "live-diff")]
    for src in sources:
        assert (tmp_path / src).is_file(), src
    golden_png = np.asarray(Image.open(tmp_path / sources[0]))
    assert golden_png.shape == (16, 16, 3)
    assert "FAILED" in text and f"{result.drift.metrics.psnr_db:.2f} dB" in text
    assert "&ge; 100 dB" in text and "torch-compile" in text


def test_index_lists_every_case_failures_first(tmp_path, images):
    write_case_page(tmp_path, result_with({k: v.copy() for k, v in images.items()}))
    same = {"golden": images["golden"], "candidate": images["golden"].copy(),
            "live": images["golden"].copy()}
    passing = result_with(same)
    passing.case = GoldenCase(resolution=16, dtype="float32", seed=0)
    write_case_page(tmp_path, passing)
    index = (tmp_path / "index.html").read_text()
    fail_at = index.index("decode-r16-bfloat16-s3.html")
    pass_at = index.index("decode-r16-float32-s0.html")
    assert fail_at < pass_at and "<b>FAIL</b>" in index and ">inf<" in index


def test_heatmap_is_black_where_identical_and_brighter_where_worse():
    reference = np.zeros((1, 4, 3), np.float32)
    image = np.array([[[0, 0, 0], [1e-6, 0, 0], [0, 1e-3, 0], [0, 0, 0.5]]], np.float32)
    pixels = heatmap(reference, image)[0].astype(int).sum(axis=1)
    assert pixels[0] == 0
    assert pixels[0] < pixels[1] < pixels[2] < pixels[3] == 3 * 255


def test_heatmap_shows_nan_as_the_worst_difference():
    reference = np.zeros((1, 1, 3), np.float32)
    image = np.full((1, 1, 3), np.nan, np.float32)
    assert heatmap(reference, image).tolist() == [[[255, 255, 255]]]


def test_ramp_runs_from_black_to_white():
    assert ramp(np.array([0.0, 1.0])).tolist() == [[0, 0, 0], [255, 255, 255]]


def test_prepare_folder_clears_only_its_own_earlier_pages(tmp_path):
    mine = prepare_folder(tmp_path / "golden")
    (mine / "old-case.html").write_text("old")
    (mine / "notes.txt").write_text("kept")
    prepare_folder(mine)
    assert not (mine / "old-case.html").exists() and (mine / "notes.txt").exists()
    foreign = tmp_path / "other"
    foreign.mkdir()
    (foreign / "page.html").write_text("someone else's")
    prepare_folder(foreign)
    assert (foreign / "page.html").read_text() == "someone else's"


def test_a_case_that_could_not_decode_still_gets_a_page_with_the_reason(tmp_path):
    case = GoldenCase(resolution=16)
    stopped = GoldenResult(case, "cpu", "aiter", "cuda",
                           problems=["GroupNorm swap for 'aiter' failed: <preflight>"])
    text = write_case_page(tmp_path, stopped).read_text()
    assert "FAILED" in text and "not compared" in text
    assert "GroupNorm swap for &#x27;aiter&#x27; failed: &lt;preflight&gt;" in text
    assert "<img src=\"zimage" not in text
