"""Five-point alignment on real photos no one here wrote (skimage astronaut, insightface's
t1.jpg group photo and its already-aligned Tom_Hanks_54745.png), checked against
insightface's own norm_crop and against known similarity transforms."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from insightface.utils import face_align

from faceclip_core.faces import (
    ARCFACE_TEMPLATE_112,
    FaceInputError,
    align_face,
    alignment_matrix,
    estimate_similarity,
    template_landmarks,
    transform_points,
)
from tests.harness.fake_insightface import ASTRONAUT_KPS, T1_KPS, astronaut_rgb, insightface_image_rgb


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return astronaut_rgb()  # RGB uint8 512x512


@pytest.fixture(scope="module")
def t1_rgb() -> np.ndarray:
    return insightface_image_rgb("t1")  # 886x1280 group photo


@pytest.fixture(scope="module")
def hanks_rgb() -> np.ndarray:
    return insightface_image_rgb("Tom_Hanks_54745")  # 112x112, already aligned


def similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(degrees)
    c, s = scale * math.cos(a), scale * math.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]], np.float64)


def compose(m2: np.ndarray, m1: np.ndarray) -> np.ndarray:
    """m2 after m1, both 2x3."""
    full = lambda m: np.vstack([m, [0, 0, 1]])  # noqa: E731
    return (full(m2) @ full(m1))[:2]


def norm_crop(img, kps, size):
    with _quiet():
        return face_align.norm_crop(img, kps, size)


class _quiet:
    """skimage 0.26 warns that SimilarityTransform.estimate is deprecated (insightface's
    code, not ours); keep the test output clean."""

    def __enter__(self):
        import warnings
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", FutureWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


@pytest.mark.parametrize("size", [112, 224, 448])
def test_matches_insightface_norm_crop_on_real_photos(astronaut, t1_rgb, hanks_rgb, size):
    cases = [(astronaut, ASTRONAUT_KPS), (hanks_rgb, ARCFACE_TEMPLATE_112.astype(np.float32))]
    cases += [(t1_rgb, k) for k in T1_KPS]
    for img, kps in cases:
        ours = align_face(img, kps, size)
        ref = norm_crop(img, kps, size)
        assert ours.shape == ref.shape == (size, size, 3) and ours.dtype == np.uint8
        diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
        assert diff.max() <= 1, f"max diff {diff.max()} at size {size}"


def test_matches_norm_crop_with_perturbed_landmarks(astronaut):
    rng = np.random.default_rng(4)
    for _ in range(20):
        kps = ASTRONAUT_KPS + rng.normal(0, 6, (5, 2)).astype(np.float32)
        diff = np.abs(align_face(astronaut, kps, 448).astype(np.int16)
                      - norm_crop(astronaut, kps, 448).astype(np.int16))
        assert diff.max() <= 1


def test_matrix_matches_insightface_estimate_norm(astronaut):
    for kps in [ASTRONAUT_KPS, *T1_KPS]:
        with _quiet():
            ref = face_align.estimate_norm(kps, 448)
        # insightface's template is float32 (1e-4 px); ours is float64
        np.testing.assert_allclose(alignment_matrix(kps, 448), ref, atol=5e-4)


def test_umeyama_equals_skimage_similarity_transform():
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(0)
    for _ in range(50):
        src = rng.uniform(0, 1000, (5, 2))
        dst = rng.uniform(0, 500, (5, 2))
        ref = SimilarityTransform()
        with _quiet():
            assert ref.estimate(src, dst)
        np.testing.assert_allclose(estimate_similarity(src, dst), ref.params[:2], atol=1e-9)


def test_exact_transform_is_recovered():
    """Landmarks moved by a known similarity give back exactly its inverse (composed with
    the template scale)."""
    t = similarity(2.7, 33.0, 150.0, -40.0)
    lm = transform_points(template_landmarks(112), t)
    m = alignment_matrix(lm, 448)
    inverse = np.linalg.inv(np.vstack([t, [0, 0, 1]]))[:2]
    expected = compose(np.array([[4.0, 0, 0], [0, 4.0, 0]]), inverse)
    np.testing.assert_allclose(m, expected, atol=1e-9)


def test_mirrored_landmarks_are_not_flipped():
    """A mirror image must be aligned by a rotation (det > 0), never by a reflection."""
    mirrored = template_landmarks(112).copy()
    mirrored[:, 0] = 112 - mirrored[:, 0]
    m = alignment_matrix(mirrored, 112)
    assert np.linalg.det(m[:, :2]) > 0


def test_tom_hanks_warped_by_known_transform_realigns_to_the_original(hanks_rgb):
    """Tom_Hanks_54745 is an aligned 112 crop, so its landmarks are the template. Warp it
    into a bigger canvas by a known similarity, move the template the same way, align:
    we must get the original back (up to two bilinear resamplings)."""
    t = similarity(3.1, 25.0, 260.0, 90.0)
    canvas = cv2.warpAffine(hanks_rgb, t, (700, 720), flags=cv2.INTER_CUBIC)
    lm = transform_points(ARCFACE_TEMPLATE_112, t)
    back = align_face(canvas, lm, 112)
    inner = (slice(3, -3), slice(3, -3))  # outermost pixels mix with the black border
    err = np.abs(back[inner].astype(np.float64) - hanks_rgb[inner])
    assert err.mean() < 3.0, err.mean()
    assert np.corrcoef(back[inner].ravel(), hanks_rgb[inner].ravel())[0, 1] > 0.99
    # and at FaceCLIP's 448: the same face, four times larger
    big = align_face(canvas, lm, 448)
    ref = cv2.resize(hanks_rgb, (448, 448), interpolation=cv2.INTER_LINEAR)
    inner = (slice(12, -12), slice(12, -12))
    assert np.corrcoef(big[inner].ravel(), ref[inner].ravel())[0, 1] > 0.98


def test_rotated_astronaut_aligns_like_the_upright_one(astronaut):
    t = similarity(1.3, -30.0, 120.0, 260.0)
    canvas = cv2.warpAffine(astronaut, t, (900, 900), flags=cv2.INTER_CUBIC)
    upright = align_face(astronaut, ASTRONAUT_KPS, 448)
    rotated = align_face(canvas, transform_points(ASTRONAUT_KPS, t), 448)
    inner = (slice(40, -40), slice(40, -40))
    err = np.abs(upright[inner].astype(np.float64) - rotated[inner])
    assert err.mean() < 4.0, err.mean()
    # a wrong transform (landmarks not moved) gives a clearly different crop
    wrong = align_face(canvas, ASTRONAUT_KPS, 448)
    assert np.abs(upright[inner].astype(np.float64) - wrong[inner]).mean() > 20


def test_group_photo_faces_are_different_crops(t1_rgb):
    crops = [align_face(t1_rgb, k, 448) for k in T1_KPS]
    for i in range(len(crops)):
        for j in range(i + 1, len(crops)):
            assert np.abs(crops[i].astype(np.int16) - crops[j]).mean() > 10


def test_channel_order_is_kept(astronaut):
    rgb = align_face(astronaut, ASTRONAUT_KPS, 448)
    bgr = align_face(np.ascontiguousarray(astronaut[..., ::-1]), ASTRONAUT_KPS, 448)
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])


def test_antialias_removes_moire_for_huge_faces():
    """A face ~2000 px wide shrunk to 448: plain bilinear (norm_crop) aliases a fine
    pattern into stripes, the antialiased path averages it to flat grey; on a smooth
    image both agree."""
    yy, xx = np.mgrid[0:3000, 0:3000]
    stripes = np.where((xx // 1) % 2 == 0, 255, 0).astype(np.uint8)
    stripes = np.repeat(stripes[..., None], 3, axis=2)
    kps = template_landmarks(112) * 20 + 200  # a face 2240 px wide
    aliased = align_face(stripes, kps, 448)
    clean = align_face(stripes, kps, 448, antialias=True)
    inner = (slice(20, -20), slice(20, -20))
    assert clean[inner].std() < 8 < aliased[inner].std()
    smooth = ((xx + 2 * yy) % 3000 * 255 / 3000).astype(np.uint8)
    smooth = np.repeat(smooth[..., None], 3, axis=2)
    a = align_face(smooth, kps, 448).astype(np.int16)
    b = align_face(smooth, kps, 448, antialias=True).astype(np.int16)
    # away from the wrap-around edge of the ramp the two agree within a few levels
    assert np.median(np.abs(a - b)[inner]) <= 2


@pytest.mark.parametrize("bad", [
    np.zeros((5, 2)),                                   # degenerate: all points equal
    np.full((5, 2), np.nan),                            # NaN
    np.zeros((4, 2)),                                   # wrong count
    [[1, 2, 3]] * 5,                                    # wrong shape
])
def test_bad_landmarks_raise_clear_errors(astronaut, bad):
    with pytest.raises(FaceInputError):
        align_face(astronaut, bad, 448)


def test_bad_images_and_sizes_raise(astronaut):
    with pytest.raises(FaceInputError, match="uint8"):
        align_face(astronaut.astype(np.float32) / 255, ASTRONAUT_KPS, 448)
    with pytest.raises(FaceInputError, match="shape"):
        align_face(np.zeros((0, 0, 3), np.uint8), ASTRONAUT_KPS, 448)
    with pytest.raises(FaceInputError, match="multiple of 112"):
        align_face(astronaut, ASTRONAUT_KPS, 500)


def test_greyscale_2d_image_aligns(astronaut):
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    out = align_face(grey, ASTRONAUT_KPS, 224)
    assert out.shape == (224, 224)
    assert np.abs(out.astype(np.int16) - norm_crop(grey, ASTRONAUT_KPS, 224)).max() <= 1
