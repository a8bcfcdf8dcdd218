"""Golden store: atomic writes, refusals, and a specific error for every bad input."""

import json
import warnings

import numpy as np
import pytest

from numguard.golden import (GoldenCase, GoldenError, image_metrics, load_golden,
                             read_manifest, to_png8, write_golden)

CASE = GoldenCase(resolution=8, dtype="float32", seed=0)
SHA = "ab" * 32


@pytest.fixture
def image():
    return np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)


@pytest.fixture
def store(tmp_path, image):
    write_golden(tmp_path, CASE, "cpu", image, {"weights_sha256": SHA})
    return tmp_path


def folder(root):
    return root / CASE.model / "cpu"


def test_round_trip(store, image):
    assert np.array_equal(load_golden(store, CASE, "cpu", SHA), image)
    entry = read_manifest(folder(store))["cases"][CASE.name]
    assert entry["resolution"] == 8 and entry["arch"] == "cpu"
    assert (folder(store) / f"{CASE.name}.png").is_file()
    assert not list(folder(store).glob(".*")), "no temporary files are left behind"


def test_refuses_to_overwrite_without_force(store, image):
    with pytest.raises(GoldenError, match="already exists; pass --force"):
        write_golden(store, CASE, "cpu", image * 0, {"weights_sha256": SHA})
    assert np.array_equal(load_golden(store, CASE, "cpu", SHA), image)
    write_golden(store, CASE, "cpu", image * 0, {"weights_sha256": SHA}, force=True)
    assert not load_golden(store, CASE, "cpu", SHA).any()


def test_missing_golden_says_how_to_create_it(tmp_path):
    with pytest.raises(GoldenError, match="no golden decode-r8-float32-s0 for arch gfx950.*"
                                          "numguard update-golden"):
        load_golden(tmp_path, CASE, "gfx950", SHA)


def test_other_arch_is_never_used(store):
    with pytest.raises(GoldenError, match="for arch gfx942"):
        load_golden(store, CASE, "gfx942", SHA)


def test_truncated_file(store):
    path = folder(store) / f"{CASE.name}.npy"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(GoldenError, match="is unreadable"):
        load_golden(store, CASE, "cpu", SHA)


def test_changed_pixels_do_not_match_the_manifest(store, image):
    np.save(folder(store) / f"{CASE.name}.npy", image + 1e-3)
    with pytest.raises(GoldenError, match="does not match the image_sha256"):
        load_golden(store, CASE, "cpu", SHA)


def test_wrong_shape(store):
    np.save(folder(store) / f"{CASE.name}.npy", np.zeros((4, 8, 3), np.float32))
    with pytest.raises(GoldenError, match=r"holds float32 \(4, 8, 3\), expected float32 \(8, 8, 3\)"):
        load_golden(store, CASE, "cpu", SHA)


def test_corrupt_manifest(store):
    (folder(store) / "manifest.json").write_text("{not json")
    with pytest.raises(GoldenError, match="is not valid JSON"):
        load_golden(store, CASE, "cpu", SHA)
    (folder(store) / "manifest.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(GoldenError, match="is not a numguard manifest"):
        load_golden(store, CASE, "cpu", SHA)


def test_nan_golden(tmp_path, image):
    image[0, 0, 0] = np.nan
    write_golden(tmp_path, CASE, "cpu", image, {"weights_sha256": SHA})
    with pytest.raises(GoldenError, match="contains NaN or Inf"):
        load_golden(tmp_path, CASE, "cpu", SHA)


def test_changed_weights_stop_the_comparison(store):
    with pytest.raises(GoldenError, match="the weights changed"):
        load_golden(store, CASE, "cpu", "cd" * 32)


def test_identical_images_have_infinite_psnr_without_warnings(image):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = image_metrics(image, image.copy())
    assert m.psnr_db == float("inf") and m.ssim == 1.0 and m.max_abs == 0.0


def test_psnr_matches_its_definition_and_counts_nans(image):
    other = image + np.float32(0.01)
    m = image_metrics(image, other)
    assert m.psnr_db == pytest.approx(40.0, abs=1e-3)  # 10 log10(1 / 0.01^2)
    other[0, 0, 0] = np.nan
    assert image_metrics(image, other).nan_count == 1


def test_shape_mismatch_is_an_error(image):
    with pytest.raises(GoldenError, match="differs from the golden's"):
        image_metrics(image, image[:4])


def test_png_is_clamped_and_rounded():
    img = np.array([[[-0.5, 0.5, 1.5]]], dtype=np.float32)
    assert to_png8(img).tolist() == [[[0, 128, 255]]]
