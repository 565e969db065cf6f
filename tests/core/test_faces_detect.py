"""Detection through insightface's real SCRFD class and real onnxruntime, with stand-in
ONNX models (tests/harness/fake_insightface.py) whose faces the tests place themselves."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from faceclip_core.faces import (
    DetectionConfig,
    FaceInputError,
    FaceModelError,
    detect_faces,
    find_model_pack,
    inspect_onnx,
    list_model_packs,
    load_face_detector,
    load_face_models,
    load_face_recognizer,
    resolve_providers,
)
from tests.harness.fake_insightface import (
    ASTRONAUT_KPS,
    T1_KPS,
    MarkerFace,
    astronaut_rgb,
    insightface_image_rgb,
    make_arcface,
    make_pack,
    make_scrfd,
    scene,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A models/insightface folder with several stand-in packs."""
    r = tmp_path_factory.mktemp("insightface")
    make_pack(r / "antelopev2", "antelopev2")
    make_pack(r / "buffalo_l", "buffalo_l", batched=True)  # det_10g names, [1, N, C] outputs
    make_pack(r / "closeup", "antelopev2", recognizer=False, max_face_px=400)
    make_pack(r / "static640", "antelopev2", recognizer=False, static_size=640,
              max_face_px=400)
    return r


@pytest.fixture(scope="module")
def detector(root):
    return load_face_detector([root], "antelopev2")


def assert_box(face, box, tol=0.51):
    np.testing.assert_allclose(face.box, box, atol=tol)


def test_known_faces_are_found_with_box_score_and_landmarks(root):
    faces = [MarkerFace((100, 120, 220, 260), 0.9), MarkerFace((400, 50, 450, 110), 0.7)]
    img = scene(480, 640, faces)
    for pack in ("antelopev2", "buffalo_l"):
        det = load_face_detector([root], pack)
        found = detect_faces(img, det)
        assert len(found) == 2
        for got, want in zip(found, faces, strict=True):  # detector order: highest score first
            assert_box(got, want.box)
            assert got.score == pytest.approx(want.reported_score, abs=1e-4)
            np.testing.assert_allclose(got.landmarks, want.landmarks, atol=0.05)
            assert got.landmarks.shape == (5, 2) and got.det_size == 640


def test_images_reach_insightface_in_bgr(detector):
    """The stand-in only sees (R=255, B=180) markers: the same picture with red and blue
    swapped (what a missing RGB->BGR conversion would hand SCRFD) shows no face."""
    img = scene(300, 300, [MarkerFace((50, 50, 200, 220), 0.9)])
    assert len(detect_faces(img, detector)) == 1
    assert detect_faces(np.ascontiguousarray(img[..., ::-1]), detector) == []


def test_no_face_gives_empty_list_after_trying_every_size(detector):
    res = detector.detect(scene(300, 300))
    assert res.faces == () and res.det_size is None
    assert res.tried_sizes == (640, 480, 320, 160)


def test_big_images_are_downscaled_for_detection_and_mapped_back(detector):
    face = MarkerFace((1200, 700, 1800, 1500), 0.8)
    img = scene(2000, 3000, [face])
    found = detect_faces(img, detector)
    assert len(found) == 1
    # 3000 px -> 640: one detector pixel is 4.7 image pixels
    assert_box(found[0], face.box, tol=3000 / 640 + 1)


def test_threshold_and_min_face_size(detector):
    faces = [MarkerFace((20, 20, 120, 140), 0.9), MarkerFace((300, 40, 340, 90), 0.6)]
    img = scene(400, 400, faces)
    assert len(detect_faces(img, detector)) == 2
    strict = detect_faces(img, detector, DetectionConfig(threshold=0.7))
    assert [round(f.score, 2) for f in strict] == [0.9]
    big_only = detect_faces(img, detector, DetectionConfig(min_face_size=60))
    assert len(big_only) == 1 and big_only[0].width == pytest.approx(100, abs=1)


def test_retry_at_smaller_sizes_finds_a_face_filling_the_frame(root):
    """The 'closeup' stand-in misses faces taller than 400 detector pixels, as SCRFD
    misses faces that fill the frame; the retry at smaller input sizes finds it."""
    det = load_face_detector([root], "closeup")
    face = MarkerFace((30, 20, 590, 620), 0.85)
    img = scene(640, 620, [face])
    only_640 = det.detect(img, DetectionConfig(det_sizes=(640,)))
    assert only_640.faces == ()
    res = det.detect(img)
    assert res.det_size == 320 and res.tried_sizes == (640, 480, 320)
    assert_box(res.faces[0], face.box, tol=2.5)


def test_fixed_size_detector_retries_by_padding(root):
    det = load_face_detector([root], "static640")
    assert det.static_input_size == 640
    face = MarkerFace((30, 20, 590, 620), 0.85)
    res = det.detect(scene(640, 620, [face]))
    assert res.det_size == 320
    assert_box(res.faces[0], face.box, tol=2.5)
    # and normal faces at the native size
    small = MarkerFace((50, 60, 150, 180), 0.9)
    assert_box(detect_faces(scene(400, 500, [small]), det)[0], small.box)


def test_shared_detector_is_thread_safe_and_never_mutated(root):
    det = load_face_detector([root], "closeup")
    scrfd = det._scrfd
    before = (scrfd.input_size, list(getattr(scrfd, "input_sizes", [])), scrfd.det_thresh,
              scrfd.nms_thresh)
    closeup = scene(640, 620, [MarkerFace((30, 20, 590, 620), 0.85)])
    normal = scene(480, 640, [MarkerFace((100, 120, 220, 260), 0.9),
                              MarkerFace((400, 50, 450, 110), 0.7)])
    jobs = [(closeup, DetectionConfig()), (normal, DetectionConfig()),
            (normal, DetectionConfig(threshold=0.8)), (closeup, DetectionConfig(det_sizes=(640,)))]
    serial = [det.detect(img, cfg) for img, cfg in jobs]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            out = []
            for _ in range(6):
                img, cfg = jobs[k % len(jobs)]
                out.append(det.detect(img, cfg))
            results[k] = out
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k, outs in results.items():
        want = serial[k % len(jobs)]
        for got in outs:
            assert got.det_size == want.det_size
            assert [f.box for f in got.faces] == [f.box for f in want.faces]
    after = (scrfd.input_size, list(getattr(scrfd, "input_sizes", [])), scrfd.det_thresh,
             scrfd.nms_thresh)
    assert before == after


# ---------------------------------------------------------------- finding model packs


def test_pack_layouts_users_end_up_with(tmp_path):
    make_pack(tmp_path / "a" / "antelopev2" / "antelopev2")  # zip unpacked into its own folder
    make_pack(tmp_path / "b" / "models" / "buffalo_l", "buffalo_l")  # insightface's layout
    roots = [tmp_path / "empty", tmp_path / "a", tmp_path / "b"]
    assert find_model_pack(roots, "antelopev2").folder == tmp_path / "a/antelopev2/antelopev2"
    info = find_model_pack(roots, "buffalo_l", with_recognizer=True)
    assert info.folder == tmp_path / "b/models/buffalo_l"
    assert info.detector.name == "det_10g.onnx" and info.recognizer.name == "w600k_r50.onnx"
    assert set(list_model_packs(roots)) == {"antelopev2", "buffalo_l"}
    # an absolute folder works as the pack name too
    det = load_face_detector([], str(tmp_path / "b/models/buffalo_l"))
    assert det.model_path.name == "det_10g.onnx"


def test_roles_come_from_the_onnx_signature_not_the_file_name(tmp_path):
    pack = tmp_path / "odd"
    make_arcface(pack / "det_10g.onnx")  # a recognizer under a detector's name
    make_scrfd(pack / "my_detector.onnx")
    make_arcface(pack / "face_embedder.onnx", seed=3)
    assert inspect_onnx(pack / "det_10g.onnx").role == "recognizer"
    assert inspect_onnx(pack / "my_detector.onnx").role == "detector"
    info = find_model_pack([tmp_path], "odd", with_recognizer=True)
    assert info.detector.name == "my_detector.onnx"
    assert info.recognizer.name in ("det_10g.onnx", "face_embedder.onnx")


def test_missing_pack_error_names_folders_and_expected_files(tmp_path):
    with pytest.raises(FaceModelError) as err:
        load_face_detector([tmp_path / "r1", tmp_path / "r2"], "antelopev2")
    msg = str(err.value)
    for folder in (tmp_path / "r1/antelopev2", tmp_path / "r2/antelopev2",
                   tmp_path / "r1/antelopev2/antelopev2", tmp_path / "r2/models/antelopev2"):
        assert str(folder) in msg
    assert "scrfd_10g_bnkps.onnx" in msg and "det_10g.onnx" in msg
    assert "not downloaded" in msg.lower() or "nothing is downloaded" in msg.lower()


def test_malformed_packs_say_what_is_wrong(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "det_10g.onnx").write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(FaceModelError) as err:
        load_face_detector([tmp_path], "broken")
    assert "det_10g.onnx" in str(err.value) and "not a readable ONNX" in str(err.value)
    assert "was found but cannot be used" in str(err.value) and "not found." not in str(err.value)

    make_arcface(tmp_path / "reconly" / "glintr100.onnx")
    with pytest.raises(FaceModelError, match="no usable face detector"):
        load_face_detector([tmp_path], "reconly")

    make_scrfd(tmp_path / "nokps" / "scrfd_10g.onnx", with_kps=False)
    with pytest.raises(FaceModelError, match="without the five landmarks"):
        load_face_detector([tmp_path], "nokps")


def test_detector_only_pack_has_no_recognizer(root):
    with pytest.raises(FaceModelError, match="no ArcFace recognition model"):
        load_face_recognizer([root], "closeup")


# ---------------------------------------------------------------- providers


def test_cpu_is_the_default_and_what_the_session_reports(detector):
    assert detector.providers == ("CPUExecutionProvider",)
    assert resolve_providers("CPU") == ["CPUExecutionProvider"]
    assert resolve_providers("auto")[-1] == "CPUExecutionProvider"


def test_unavailable_gpu_provider_falls_back_to_cpu_with_a_warning(root, caplog):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the fallback cannot be observed")
    with caplog.at_level(logging.WARNING, logger="faceclip_core.faces"):
        det = load_face_detector([root], "antelopev2", provider="CUDA")
    assert det.providers == ("CPUExecutionProvider",)
    assert any("CUDAExecutionProvider" in r.getMessage() for r in caplog.records)


def test_unknown_provider_is_an_error():
    with pytest.raises(FaceModelError, match="unknown execution provider"):
        resolve_providers("banana")


# ---------------------------------------------------------------- recognition


def test_recognizer_similarity_on_real_photos(root):
    import cv2

    rec = load_face_recognizer([root], "antelopev2")
    astro = astronaut_rgb()
    t1 = insightface_image_rgb("t1")
    m = np.array([[0.9, -0.3, 80.0], [0.3, 0.9, 10.0]])
    moved = cv2.warpAffine(astro, m, (700, 700), flags=cv2.INTER_CUBIC)
    moved_kps = ASTRONAUT_KPS @ m[:, :2].T + m[:, 2]
    e1 = rec.embed(astro, ASTRONAUT_KPS)
    e2 = rec.embed(moved, moved_kps)
    e3 = rec.embed(t1, T1_KPS[1])
    assert e1.shape == (512,) and np.linalg.norm(e1) == pytest.approx(1.0, abs=1e-5)
    same, other = float(e1 @ e2), float(e1 @ e3)  # embeddings are unit vectors
    assert same > 0.98 and same > other


# ---------------------------------------------------------------- import hygiene


def _run(code: str, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(extra_path) if extra_path else "", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_importing_the_core_loads_no_face_runtime():
    out = _run("""
        import sys, faceclip_core, faceclip_core.faces
        from faceclip_core import align_face, prepare_faces, PreparedFaces
        heavy = [m for m in ("insightface", "onnxruntime", "onnx", "cv2")
                 if m in sys.modules]
        print("HEAVY", heavy)
    """)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def _load_detector_elsewhere(root: Path, hidden: str | None = None,
                             extra_path: Path | None = None) -> subprocess.CompletedProcess:
    """load_face_detector in a fresh Python (``hidden``: a package made unimportable there); prints the
    FaceModelError as 'MODEL-ERROR ...'."""
    hide = f"import sys; sys.modules[{hidden!r}] = None" if hidden else ""
    return _run(f"""
        {hide}
        import faceclip_core.faces as f
        try:
            f.load_face_detector([{str(root)!r}], "antelopev2")
        except f.FaceModelError as e:
            print("MODEL-ERROR", e)
    """, extra_path=extra_path)


def test_broken_insightface_does_not_break_import_only_loading(tmp_path, root):
    fake = tmp_path / "site" / "insightface"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ImportError('numpy.dtype size changed, may indicate binary incompatibility')\n")
    out = _load_detector_elsewhere(root, extra_path=tmp_path / "site")
    assert out.returncode == 0, out.stderr
    assert "MODEL-ERROR insightface could not be imported" in out.stdout
    assert "numpy.dtype size changed" in out.stdout


def test_missing_onnxruntime_is_named_with_its_install_command(root):
    out = _load_detector_elsewhere(root, hidden="onnxruntime")
    assert out.returncode == 0, out.stderr
    assert "MODEL-ERROR onnxruntime could not be imported" in out.stdout
    assert "`pip install onnxruntime`" in out.stdout and "insightface" not in out.stdout


def test_detect_faces_rejects_non_detectors():
    with pytest.raises(FaceInputError):
        detect_faces(np.zeros((10, 10, 3), np.uint8), object())


def test_loaded_face_models_have_the_packs_recognizer_when_it_has_one(root):
    with_rec = load_face_models([root], "antelopev2")
    assert with_rec.recognizer is not None and with_rec.require_recognizer() is with_rec.recognizer
    assert with_rec.recognizer.model_path == with_rec.detector.pack.recognizer
    without = load_face_models([root], "closeup")
    assert without.recognizer is None
    with pytest.raises(FaceModelError, match="no ArcFace recognition model"):
        without.require_recognizer()


def test_a_detector_size_off_the_stride_is_rounded_and_detects(root, caplog):
    with caplog.at_level(logging.WARNING):
        models = load_face_models([root], "antelopev2", det_size=650)
    assert models.detection.det_sizes[0] == 640 and "not a multiple of 32" in caplog.text
    img = scene(500, 500, [MarkerFace((100, 100, 300, 340), 0.9)])
    assert len(detect_faces(img, models.detector, models.detection)) == 1


def test_the_loaders_threshold_decides_which_faces_are_found(root):
    img = scene(500, 500, [MarkerFace((100, 100, 300, 340), 0.6)])
    assert len(detect_faces(img, *_models(root, 0.5))) == 1
    assert detect_faces(img, *_models(root, 0.7)) == []


def _models(root, threshold):
    models = load_face_models([root], "antelopev2", threshold=threshold)
    return models.detector, models.detection


def test_an_onnxruntime_gpu_beside_the_cpu_build_is_reported_with_what_to_run(tmp_path):
    site = tmp_path / "site"  # what `pip install onnxruntime-gpu` leaves besides the module files
    dist = site / "onnxruntime_gpu-1.20.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.20.0\n")
    code = """
        from faceclip_core.faces.runtime_check import onnxruntime_conflict
        print("CONFLICT", onnxruntime_conflict())
    """
    alone = _run(code)
    assert alone.returncode == 0, alone.stderr
    assert "CONFLICT None" in alone.stdout  # the test venv holds the CPU build only
    mixed = _run(code, extra_path=site)
    assert mixed.returncode == 0, mixed.stderr
    assert "side by side (onnxruntime, onnxruntime-gpu)" in mixed.stdout
    assert "`python -m pip uninstall -y onnxruntime onnxruntime-gpu`" in mixed.stdout
    assert "`python -m pip install onnxruntime-gpu`" in mixed.stdout
