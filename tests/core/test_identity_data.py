"""Training images for ID embeddings: each photo framed around its face (face / head / head and shoulders),
SDXL's original size, small photos named in a warning, mirror images on the pixels; through the real
insightface + onnxruntime stand-in detector."""
from __future__ import annotations

import numpy as np
import pytest

from faceclip_core.faces import align_face, frame_face, framing_matrix, load_face_detector, prepare_faces
from faceclip_core.identity import training_images
from tests.harness.fake_insightface import MarkerFace, expected_landmarks, make_pack, scene

FACE = MarkerFace((400, 300, 520, 440), 0.9)  # 120x140 px in a 1200x1000 photo


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    root = tmp_path_factory.mktemp("insightface")
    make_pack(root / "antelopev2")
    return load_face_detector([root], "antelopev2")


def _unit(box) -> float:
    lm = expected_landmarks(box)
    return float(np.linalg.norm(lm[3:].mean(0) - lm[:2].mean(0)))


def _source_box(matrix: np.ndarray, size: int) -> tuple[float, float, float, float]:
    inv = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))
    corners = np.array([[0, 0, 1], [size, size, 1]], float) @ inv.T
    return corners[0, 0], corners[0, 1], corners[1, 0], corners[1, 1]


@pytest.mark.parametrize(("framing", "side_units"), [("head", 4.6), ("head_and_shoulders", 7.5)])
def test_upright_framings_contain_the_face_with_room_around_it(framing, side_units):
    m, side = framing_matrix(FACE.landmarks, (1000, 1200), framing, 512)
    assert side == pytest.approx(side_units * _unit(FACE.box))
    x0, y0, x1, y1 = _source_box(m, 512)
    assert (x1 - x0) == pytest.approx(side) and (y1 - y0) == pytest.approx(side)  # square, upright
    fx0, fy0, fx1, fy1 = FACE.box
    assert x0 < fx0 and x1 > fx1 and y0 < fy0 and y1 > fy1
    if framing == "head_and_shoulders":  # more room below the face (neck, shoulders) than above it
        assert y1 - fy1 > fy0 - y0


def test_face_framing_is_the_aligned_crop_prepare_faces_makes():
    photo = scene(1000, 1200, [FACE])
    crop, side = frame_face(photo, FACE.landmarks, "face", 448)
    assert np.array_equal(crop, align_face(photo, FACE.landmarks, 448, antialias=True))
    assert side == pytest.approx(448 / 3.0, rel=0.25)  # the ArcFace box is ~2.8 eye-to-mouth units wide


def test_a_tight_photo_gives_a_crop_that_fits_inside_it_without_black_borders():
    small = MarkerFace((40, 30, 160, 170), 0.9)
    photo = scene(240, 200, [small])
    m, side = framing_matrix(small.landmarks, (240, 200), "head_and_shoulders", 256)
    assert side == 200  # the photo's width
    x0, y0, x1, y1 = _source_box(m, 256)
    assert x0 >= -1e-6 and y0 >= -1e-6 and x1 <= 200 + 1e-6 and y1 <= 240 + 1e-6
    crop, _ = frame_face(photo, small.landmarks, "head_and_shoulders", 256)
    assert crop.shape == (256, 256, 3) and crop.min() > 0  # grey background and the face, nothing black


def test_training_images_carry_original_sizes_warn_about_small_photos_and_mirror(detector):
    photos = np.stack([scene(900, 900, [MarkerFace((350, 250, 560, 490), 0.9)]),
                       scene(900, 900, [MarkerFace((400, 340, 460, 410), 0.9)])])  # a big and a small face
    faces = prepare_faces(photos, detector)
    images = training_images(faces, "head_and_shoulders", 512, flip=True)
    assert images.pixels.shape == (4, 512, 512, 3) and images.pixels.dtype == np.float32
    big, small = images.original_sizes[:2]
    assert big > 512 > small and list(images.original_sizes[2:]) == [big, small]
    assert len(images.notes) == 1 and images.notes[0].startswith("photo 2 of 2:")
    assert "upscaled" in images.notes[0]
    assert np.array_equal(images.pixels[2], images.pixels[0][:, ::-1])  # mirrored on the pixels
    no_flip = training_images(faces, "face", 512, flip=False)
    assert no_flip.pixels.shape[0] == 2
