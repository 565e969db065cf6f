"""prepare_faces: selection policies, several references, no-face policies, input formats,
bad inputs and previews, end to end through insightface + onnxruntime with stand-in
models whose faces the tests place."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from faceclip_core.faces import (
    DetectionConfig,
    FaceInputError,
    FaceSelection,
    NoFaceError,
    PrepareConfig,
    align_face,
    load_face_detector,
    load_face_recognizer,
    mean_identity,
    prepare_faces,
    similarity_to_reference,
    split_images,
    to_rgb_uint8,
)
from faceclip_core.faces.annotate import CHOSEN_COLOR, NO_FACE_COLOR, OTHER_COLOR
from tests.harness.fake_insightface import MarkerFace, astronaut_rgb, make_pack, scene

# A group photo with known answers: A is the largest (bottom left, low score), B the most
# confident (small, top middle), C in between (right).
A = MarkerFace((40, 300, 240, 540), 0.70)
B = MarkerFace((300, 60, 380, 150), 0.95)
C = MarkerFace((480, 200, 620, 360), 0.80)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("insightface")
    make_pack(r / "antelopev2")
    return r


@pytest.fixture(scope="module")
def det(root):
    return load_face_detector([root], "antelopev2")


@pytest.fixture(scope="module")
def rec(root):
    return load_face_recognizer([root], "antelopev2")


@pytest.fixture(scope="module")
def group() -> np.ndarray:
    return scene(600, 640, [A, B, C])  # fits the detector: no rescaling


def chosen_box(prepared, i=0):
    return prepared.images[i].face.box


@pytest.mark.parametrize("policy,index,want", [
    ("largest", 0, A), ("largest", 1, C), ("largest", -1, B),
    ("most_confident", 0, B), ("most_confident", 2, A),
    ("left_to_right", 0, A), ("left_to_right", 1, B), ("left_to_right", 2, C),
    ("right_to_left", 0, C),
    ("top_to_bottom", 0, B), ("top_to_bottom", 1, C), ("top_to_bottom", 2, A),
    ("bottom_to_top", 0, A),
    ("index", 0, B), ("index", 1, C), ("index", 2, A),  # detector order = score order
])
def test_selection_policies(det, group, policy, index, want):
    cfg = PrepareConfig(selection=FaceSelection(policy, index))
    p = prepare_faces(group, det, config=cfg)
    np.testing.assert_allclose(chosen_box(p), want.box, atol=0.51)
    assert len(p.images[0].faces) == 3
    # the crop is the aligned chosen face
    ref = align_face(group, want.landmarks, 448)
    assert np.abs(p.crops[0].astype(np.int16) - ref).max() <= 2


def test_default_is_the_largest_face(det, group):
    assert chosen_box(prepare_faces(group, det)) == pytest.approx(A.box, abs=0.51)


def test_index_beyond_the_faces_found_follows_the_policy(det, group):
    cfg = PrepareConfig(selection=FaceSelection("left_to_right", 3))
    with pytest.raises(NoFaceError) as err:
        prepare_faces(group, det, config=cfg)
    assert "3 face(s) found" in str(err.value) and err.value.faces_found == 3
    assert "batch index 0" in str(err.value)
    p = prepare_faces([group, scene(300, 300, [A])], det,
                      config=PrepareConfig(selection=FaceSelection("largest", 1),
                                           on_no_face="skip"))
    assert p.source_indices == (0,) and [im.status for im in p.images] == ["ok", "skipped"]


def test_several_references_keep_order_and_report_failures(det):
    imgs = [scene(400, 400, [MarkerFace((50, 50, 200, 220), 0.9)]),
            scene(400, 400),  # no face
            scene(500, 300, [MarkerFace((20, 100, 250, 380), 0.8)]),
            scene(400, 400, [MarkerFace((150, 150, 260, 280), 0.9)])]
    # raise (default): names the image
    with pytest.raises(NoFaceError) as err:
        prepare_faces(imgs, det)
    assert err.value.image_index == 1
    assert "image 2 of 4 (batch index 1)" in str(err.value)
    assert "skip" in str(err.value) and "text_only" in str(err.value)

    skip = prepare_faces(imgs, det, config=PrepareConfig(on_no_face="skip"))
    assert len(skip) == 3 and skip.source_indices == (0, 2, 3)
    assert skip.has_face.tolist() == [True, True, True]
    assert [im.status for im in skip.images] == ["ok", "skipped", "ok", "ok"]
    assert skip.images[1].slot is None and skip.images[3].slot == 2
    assert "no face found" in skip.images[1].reason

    text = prepare_faces(imgs, det, config=PrepareConfig(on_no_face="text_only"))
    assert len(text) == 4 and text.source_indices == (0, 1, 2, 3)
    assert text.has_face.tolist() == [True, False, True, True]
    assert not text.crops[1].any() and text.crops[0].any()
    assert text.images[1].status == "text_only" and text.images[1].slot == 1
    # the face crops are the same whichever policy kept them
    np.testing.assert_array_equal(skip.crops, text.crops[[0, 2, 3]])
    assert text.crops.shape == (4, 448, 448, 3) and text.crops.dtype == np.uint8
    f = text.crops_float()
    assert f.dtype == np.float32 and 0.0 <= f.min() and f.max() <= 1.0


def test_progress_callback_can_interrupt(det):
    imgs = [scene(200, 200, [MarkerFace((20, 20, 150, 170), 0.9)])] * 3
    seen = []
    prepare_faces(imgs, det, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]

    class Interrupted(Exception):
        pass

    def stop(done, total):
        raise Interrupted

    with pytest.raises(Interrupted):
        prepare_faces(imgs, det, progress=stop)


def test_all_images_without_faces(det):
    blank = [scene(100, 100), astronaut_rgb()]  # a real photo the stand-in sees no face in
    with pytest.raises(NoFaceError, match="none of the 2 image"):
        prepare_faces(blank, det, config=PrepareConfig(on_no_face="skip"))
    text = prepare_faces(blank, det, config=PrepareConfig(on_no_face="text_only"))
    assert text.has_face.tolist() == [False, False] and text.num_faces == 0


def test_embeddings_and_one_identity_from_several_photos(det, rec):
    imgs = [scene(400, 400, [MarkerFace((50, 50, 200, 220), 0.9)]), scene(300, 300),
            scene(500, 500, [MarkerFace((100, 80, 400, 430), 0.9)]),
            scene(400, 400, [MarkerFace((60, 40, 230, 240), 0.6)])]  # another "person": other pixels
    p = prepare_faces(imgs, det, recognizer=rec, config=PrepareConfig(on_no_face="text_only"))
    assert p.embeddings.shape == (4, 512)
    np.testing.assert_allclose(np.linalg.norm(p.embeddings[[0, 2, 3]], axis=1), 1.0, atol=1e-5)
    assert not p.embeddings[1].any()
    same = mean_identity(p.embeddings[:3], p.has_face[:3])  # the same face twice and a face-free slot
    assert np.linalg.norm(same) == pytest.approx(1.0) and float(same @ p.embeddings[0]) > 0.99
    mixed = mean_identity(p.embeddings, p.has_face)
    assert float(p.embeddings[0] @ p.embeddings[3]) < 0.95  # the stand-in tells the two apart ...
    assert float(mixed @ p.embeddings[0]) < float(same @ p.embeddings[0])  # ... and the mean moves toward both
    assert mean_identity(p.embeddings[[1]], p.has_face[[1]]) is None
    faceless = prepare_faces([scene(300, 300)], det, recognizer=rec, config=PrepareConfig(on_no_face="text_only"))
    assert np.isnan(similarity_to_reference(p, faceless, rec)).all()  # no face to score, not a crash
    assert prepare_faces(imgs[0], det).embeddings is None  # detector alone is enough


# ---------------------------------------------------------------- input formats


def test_formats_give_the_same_face(det):
    face = MarkerFace((60, 40, 220, 230), 0.9)
    rgb = scene(300, 280, [face])
    variants = {
        "uint8 HWC": rgb,
        "float HWC": rgb.astype(np.float32) / 255,
        "float64 HWC": rgb.astype(np.float64) / 255,
        "RGBA": np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),
        "CHW float": rgb.transpose(2, 0, 1).astype(np.float32) / 255,
        "uint16": rgb.astype(np.uint16) * 257,
        "batch of 1": rgb[None],
        "torch IMAGE": torch.from_numpy(rgb[None].astype(np.float32) / 255),
        "torch bf16": torch.from_numpy(rgb.astype(np.float32) / 255).to(torch.bfloat16),
        "0..255 float": rgb.astype(np.float32),
        "torch uint8 CHW": torch.from_numpy(rgb).permute(2, 0, 1),
        "torch int64": torch.from_numpy(rgb.astype(np.int64)),
    }
    ref = prepare_faces(rgb, det).crops[0]
    for name, img in variants.items():
        p = prepare_faces(img, det)
        # a 300 px image is upscaled to the 640 detector: edges land within a pixel
        np.testing.assert_allclose(chosen_box(p), face.box, atol=1.0, err_msg=name)
        diff = np.abs(p.crops[0].astype(np.int16) - ref).max()
        assert diff <= (40 if name == "torch bf16" else 1), (name, diff)


def test_comfy_batches_and_lists(det):
    a = scene(256, 256, [MarkerFace((30, 30, 150, 170), 0.9)])
    b = scene(256, 256)
    batch = torch.from_numpy(np.stack([a, b, a]).astype(np.float32) / 255)  # [B,H,W,C]
    assert len(split_images(batch)) == 3
    p = prepare_faces(batch, det, config=PrepareConfig(on_no_face="skip"))
    assert p.source_indices == (0, 2)
    mixed = [a, scene(500, 320, [MarkerFace((10, 10, 300, 330), 0.9)])]  # different sizes
    assert len(prepare_faces(mixed, det)) == 2


def test_greyscale_images_are_accepted(det):
    grey = np.full((200, 200), 90, np.uint8)
    assert to_rgb_uint8(grey).shape == (200, 200, 3)
    assert to_rgb_uint8(grey[..., None]).shape == (200, 200, 3)
    p = prepare_faces(grey, det, config=PrepareConfig(on_no_face="text_only"))
    assert p.images[0].status == "text_only"


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("bad,match", [
    (np.zeros((0, 0, 3), np.uint8), "empty"),
    (np.zeros((10, 0, 3), np.float32), "empty"),
    (np.zeros((10, 10, 2), np.uint8), "2 channels"),
    (np.zeros((10, 10, 5), np.uint8), "5 channels"),
    (np.zeros((10, 10), bool), "boolean"),
    (np.zeros((2, 2, 10, 10, 3), np.uint8), "shape"),
    (np.zeros(7, np.uint8), "shape"),
    (np.full((10, 10, 3), -3, np.int32), "outside 0..255"),
])
def test_unusable_arrays_raise_input_errors_whatever_the_policy(det, bad, match):
    for policy in ("raise", "skip", "text_only"):
        with pytest.raises(FaceInputError, match=match):
            prepare_faces(bad, det, config=PrepareConfig(on_no_face=policy))


def test_nan_is_reported_with_the_batch_index(det):
    good = np.full((64, 64, 3), 0.5, np.float32)
    bad = good.copy()
    bad[3, 4, 1] = np.nan
    with pytest.raises(FaceInputError, match="batch index 1 contains NaN") as err:
        prepare_faces(np.stack([good, bad]), det, config=PrepareConfig(on_no_face="skip"))
    assert err.value.image_index == 1
    with pytest.raises(FaceInputError, match="NaN"):
        prepare_faces(torch.from_numpy(bad)[None], det)
    with pytest.raises(FaceInputError, match="infinite"):
        prepare_faces(np.full((8, 8, 3), np.inf, np.float32), det)
    with pytest.raises(FaceInputError):
        prepare_faces(None, det)
    with pytest.raises(FaceInputError, match="no images"):
        prepare_faces([], det)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 1), (1, 2000, 3), (3000, 2, 3), (5, 7, 4)])
def test_tiny_and_degenerate_images_have_no_face(det, shape):
    img = np.full(shape, 128, np.uint8)
    with pytest.raises(NoFaceError, match="no face found"):
        prepare_faces(img, det)
    p = prepare_faces(img, det, config=PrepareConfig(on_no_face="text_only"))
    assert p.images[0].status == "text_only" and p.images[0].annotated is not None


def test_non_face_photo_follows_the_policy(det):
    photo = astronaut_rgb()
    with pytest.raises(NoFaceError, match="no face found"):
        prepare_faces(photo, det)
    assert prepare_faces(photo, det, config=PrepareConfig(on_no_face="text_only")).num_faces == 0


def test_8k_image_is_downscaled_for_detection_and_cropped_at_full_resolution(det):
    face = MarkerFace((3000, 2000, 4800, 4200), 0.9)
    img = scene(7680, 7680, [face])
    cfg = PrepareConfig(detection=DetectionConfig(det_sizes=(640,)))
    p = prepare_faces(img, det, config=cfg)
    im = p.images[0]
    assert im.det_size == 640 and im.image_size == (7680, 7680)
    np.testing.assert_allclose(im.face.box, face.box, atol=7680 / 640 + 1)  # 12 px per det px
    # the crop comes from the full-resolution image: a 1800 px face fills the 448 crop
    assert p.crops[0].shape == (448, 448, 3)
    assert im.annotated.shape == (1024, 1024, 3)  # previews are shrunk


def test_huge_float_tensor_is_prepared(det):  # its speed: bench/faces.py (prepare_float_tensor_s)
    face = MarkerFace((1000, 1000, 2600, 2800), 0.9)
    img = torch.from_numpy(scene(4096, 4096, [face])).float().div_(255)[None]
    p = prepare_faces(img, det)
    np.testing.assert_allclose(chosen_box(p), face.box, atol=4096 / 640 + 1)


# ---------------------------------------------------------------- previews


def _has_color(img: np.ndarray, color, region) -> bool:
    x0, y0, x1, y1 = region
    patch = img[max(0, y0):y1, max(0, x0):x1].reshape(-1, 3)
    return bool((np.abs(patch.astype(int) - color).sum(axis=1) == 0).any())


def test_annotated_preview_highlights_the_chosen_face(det, group):
    p = prepare_faces(group, det, config=PrepareConfig(thumbnails=True))
    ann = p.images[0].annotated
    assert ann.shape == group.shape and ann.dtype == np.uint8
    assert not np.array_equal(ann, group)  # drawn on a copy...
    assert (group == scene(600, 640, [A, B, C])).all()  # ...never on the input
    x0, y0, x1, y1 = A.box  # the chosen (largest) face: thick green outline
    assert _has_color(ann, CHOSEN_COLOR, (x0 - 4, y0 - 4, x0 + 4, y1))
    for other in (B, C):
        ox0, oy0, ox1, oy1 = other.box
        assert _has_color(ann, OTHER_COLOR, (ox0 - 2, oy0 + 20, ox0 + 2, oy1))
        assert not _has_color(ann, CHOSEN_COLOR, (ox0 - 2, oy0 + 20, ox0 + 2, oy1))
    thumbs = p.images[0].thumbnails
    assert thumbs.shape == (3, 112, 112, 3)
    json.dumps(p.images[0].to_dict())


def test_preview_of_an_image_without_faces_says_so(det):
    p = prepare_faces([scene(300, 400), scene(300, 400, [B])], det,
                      config=PrepareConfig(on_no_face="skip"))
    ann = p.images[0].annotated
    assert ann.shape == (300, 400, 3)
    assert _has_color(ann, NO_FACE_COLOR, (0, 0, 60, 20))
    assert "no face found" in p.summary()


def test_invalid_configs():
    with pytest.raises(ValueError, match="on_no_face"):
        PrepareConfig(on_no_face="ignore")
    with pytest.raises(ValueError, match="policy"):
        FaceSelection("smallest")
    with pytest.raises(ValueError, match="multiples of 32"):
        DetectionConfig(det_sizes=(600,))
    with pytest.raises(ValueError, match="threshold"):
        DetectionConfig(threshold=1.5)
