"""Golden store: atomic writes, refusals, fallbacks, a specific error per bad input."""

import hashlib
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from numguard import golden
from numguard.golden import (BASELINE_GROUPNORM, GoldenCase, GoldenError, find_golden,
                             image_metrics, load_golden, read_manifest, to_png8,
                             write_golden)

CASE = GoldenCase(resolution=8, dtype="float32", seed=0)
SHA = "ab" * 32
META = {"weights_sha256": SHA, "groupnorm": BASELINE_GROUPNORM}


@pytest.fixture
def image():
    return np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)


@pytest.fixture
def store(tmp_path, image):
    write_golden(tmp_path, CASE, "cpu", image, META)
    return tmp_path


def folder(root, arch="cpu"):
    return root / CASE.model / arch


def npy(root):
    return folder(root) / f"{CASE.name}.npy"


def png(root):
    return folder(root) / f"{CASE.name}.png"


def rewrite_manifest(root, **changes):
    path = folder(root) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["cases"][CASE.name].update(changes)
    path.write_text(json.dumps(manifest))


def test_round_trip(store, image):
    assert np.array_equal(load_golden(store, CASE, "cpu", SHA), image)
    entry = read_manifest(folder(store))["cases"][CASE.name]
    assert (entry["resolution"], entry["arch"]) == (8, "cpu")
    assert entry["model"] == CASE.model
    assert entry["png_sha256"] == hashlib.sha256(png(store).read_bytes()).hexdigest()
    assert np.array_equal(np.asarray(Image.open(png(store))), to_png8(image))
    assert not list(folder(store).glob(".*")), "no temporary files are left behind"


def test_refuses_to_overwrite_without_force(store, image):
    with pytest.raises(GoldenError, match="already exists; pass --force"):
        write_golden(store, CASE, "cpu", image * 0, META)
    assert np.array_equal(load_golden(store, CASE, "cpu", SHA), image)
    write_golden(store, CASE, "cpu", image * 0, META, force=True)
    assert not load_golden(store, CASE, "cpu", SHA).any()


def test_refuses_an_image_not_made_by_the_torch_baseline(tmp_path, image):
    meta = {**META, "groupnorm": "aiter.ops.groupnorm.GroupNorm"}
    with pytest.raises(GoldenError, match="only from the torch baseline.*aiter"):
        write_golden(tmp_path, CASE, "cpu", image, meta)
    assert not folder(tmp_path).exists() or not any(folder(tmp_path).iterdir())


def test_refuses_to_store_nan(tmp_path, image):
    image[3, 4, 1] = np.nan
    with pytest.raises(GoldenError, match="NaN or Inf in the image to store: 1 of 192 "
                                          "values, the first at row 3, column 4"):
        write_golden(tmp_path, CASE, "cpu", image, META)


def test_interrupted_write_leaves_nothing_behind(tmp_path, image, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        write_golden(tmp_path, CASE, "cpu", image, META)
    assert list(folder(tmp_path).iterdir()) == []


def test_missing_golden_is_a_failure_that_says_how_to_create_it(tmp_path):
    with pytest.raises(GoldenError) as info:
        find_golden(tmp_path, CASE, "gfx950", SHA)
    message = str(info.value)
    assert "no golden decode-r8-float32-s0 for arch gfx950" in message
    assert "ARCH_FALLBACK lists nothing for gfx950" in message
    assert (f"numguard update-golden --model zimage-synthetic --golden-dir {tmp_path} "
            "--device <device> --resolution 8 --dtype float32 --seed 0") in message


def test_the_default_store_is_not_named_in_the_fix():
    from numguard.golden import default_golden_root

    assert "--golden-dir" not in CASE.update_command("cpu", default_golden_root())
    assert "--golden-dir" not in CASE.update_command("cpu")


def test_other_arch_is_never_used_without_a_fallback_entry(store):
    with pytest.raises(GoldenError, match="no golden .* for arch gfx942"):
        find_golden(store, CASE, "gfx942", SHA)


def test_an_explicit_fallback_is_used_and_reported(store, image, monkeypatch):
    monkeypatch.setattr(golden, "ARCH_FALLBACK", {"gfx950": ("gfx942", "cpu")})
    found, arch, source = find_golden(store, CASE, "gfx950", SHA)
    assert np.array_equal(found, image) and arch == "cpu"
    assert source == ("fallback: gfx950 has no golden for this case and "
                      "ARCH_FALLBACK['gfx950'] = ('gfx942', 'cpu')")
    assert find_golden(store, CASE, "cpu", SHA)[1:] == ("cpu", "own arch")


def test_a_corrupt_golden_is_an_error_not_a_reason_to_fall_back(store, monkeypatch):
    monkeypatch.setattr(golden, "ARCH_FALLBACK", {"gfx950": ("cpu",)})
    write_golden(store, CASE, "gfx950", np.zeros((8, 8, 3), np.float32), META)
    (folder(store, "gfx950") / f"{CASE.name}.npy").write_bytes(b"garbage")
    with pytest.raises(GoldenError, match="gfx950/decode-r8-float32-s0.npy is unread"):
        find_golden(store, CASE, "gfx950", SHA)


def test_truncated_npy(store):
    npy(store).write_bytes(npy(store).read_bytes()[:100])
    with pytest.raises(GoldenError, match="is unreadable"):
        load_golden(store, CASE, "cpu", SHA)


def test_changed_pixels_do_not_match_the_manifest(store, image):
    np.save(npy(store), image + 1e-3)
    with pytest.raises(GoldenError, match="does not match the image_sha256"):
        load_golden(store, CASE, "cpu", SHA)


def test_wrong_shape(store):
    np.save(npy(store), np.zeros((4, 8, 3), np.float32))
    rule = r"holds float32 \(4, 8, 3\), expected float32 \(8, 8, 3\)"
    with pytest.raises(GoldenError, match=rule):
        load_golden(store, CASE, "cpu", SHA)


def test_wrong_dtype(store, image):
    np.save(npy(store), image.astype(np.float64))
    with pytest.raises(GoldenError, match=r"holds float64 \(8, 8, 3\), expected"):
        load_golden(store, CASE, "cpu", SHA)


def test_manifest_that_describes_another_case(store):
    rewrite_manifest(store, resolution=16)
    with pytest.raises(GoldenError, match="records .*'resolution': 16.* but the case "
                                          "is .*'resolution': 8.*does not describe"):
        load_golden(store, CASE, "cpu", SHA)


def test_corrupt_manifest(store):
    (folder(store) / "manifest.json").write_text("{not json")
    with pytest.raises(GoldenError, match="is not valid JSON"):
        load_golden(store, CASE, "cpu", SHA)
    (folder(store) / "manifest.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(GoldenError, match="is not a numguard manifest"):
        load_golden(store, CASE, "cpu", SHA)


def test_truncated_png(store):
    png(store).write_bytes(png(store).read_bytes()[:60])
    with pytest.raises(GoldenError, match="decode-r8-float32-s0.png is a corrupt or "
                                          "truncated PNG"):
        load_golden(store, CASE, "cpu", SHA)


def test_png_replaced_by_another_picture(store, image):
    Image.fromarray(to_png8(1 - image)).save(png(store))
    with pytest.raises(GoldenError, match="png does not match the png_sha256"):
        load_golden(store, CASE, "cpu", SHA)
    new_sha = hashlib.sha256(png(store).read_bytes()).hexdigest()
    rewrite_manifest(store, png_sha256=new_sha)
    with pytest.raises(GoldenError, match="does not show the image in decode-r8"):
        load_golden(store, CASE, "cpu", SHA)


def test_missing_png(store):
    png(store).unlink()
    with pytest.raises(GoldenError, match="png is missing; the manifest lists it"):
        load_golden(store, CASE, "cpu", SHA)


def test_nan_planted_in_a_golden(store, image):
    image[0, 0, 0] = np.nan
    np.save(npy(store), image)
    rewrite_manifest(store, image_sha256=golden.sha256_array(image))
    with pytest.raises(GoldenError, match="contains NaN or Inf"):
        load_golden(store, CASE, "cpu", SHA)


def test_changed_weights_stop_the_comparison(store):
    with pytest.raises(GoldenError, match="the weights changed"):
        load_golden(store, CASE, "cpu", "cd" * 32)


def test_goldens_of_another_convolution_mode_are_not_compared(store):
    rule = "decoded with native convolutions, this run uses float32 accumulation"
    with pytest.raises(GoldenError, match=rule):
        load_golden(store, CASE, "cpu", SHA, "float32 accumulation rounded to bfloat16")


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


def test_shape_and_dtype_mismatches_are_errors(image):
    with pytest.raises(GoldenError, match=r"shape \(4, 8, 3\) differs from the golden"):
        image_metrics(image, image[:4])
    with pytest.raises(GoldenError, match="dtype float64 differs from the golden's"):
        image_metrics(image, image.astype(np.float64))


def test_png_is_clamped_and_rounded():
    img = np.array([[[-0.5, 0.5, 1.5]]], dtype=np.float32)
    assert to_png8(img).tolist() == [[[0, 128, 255]]]


@pytest.mark.parametrize("field, value, rule", [
    ("model", "zimage-turbo", "model 'zimage-turbo' is not one of"),
    ("dtype", "float64", "dtype 'float64' is not one of"),
    ("resolution", 100, "resolution 100 must be a positive multiple of 8"),
])
def test_case_arguments_are_checked(field, value, rule):
    with pytest.raises(ValueError, match=rule):
        GoldenCase(**{field: value})
