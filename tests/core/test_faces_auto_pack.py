"""Load Face Detector's pack "auto": whichever insightface pack is installed, chosen from real pack folders
(stand-in ONNX models, tests/harness/fake_insightface.py) the way resolve_auto_pack documents."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from faceclip_core.faces import AUTO_PACK, FaceModelError, find_model_pack, load_face_models, resolve_auto_pack
from faceclip_core.faces.model_packs import INSIGHTFACE_LICENCE, INSIGHTFACE_MODEL_ZOO
from tests.harness.fake_insightface import make_pack


def broken_pack(folder: Path) -> Path:
    """A pack folder whose detector download went wrong (an HTML error page saved as the .onnx file)."""
    folder.mkdir(parents=True)
    (folder / "det_10g.onnx").write_bytes(b"<html>404 Not Found</html>")
    return folder


def test_auto_takes_antelopev2_then_buffalo_l_then_the_first_other_usable_pack(tmp_path, caplog):
    first, second = tmp_path / "first_root", tmp_path / "second_root"
    make_pack(first / "buffalo_l", "buffalo_l")
    make_pack(second / "antelopev2" / "antelopev2")  # the zip unpacked into its own folder, in a later root
    make_pack(first / "zz_custom", "antelopev2", recognizer=False)
    broken_pack(first / "aa_broken")  # listed before zz_custom, but unusable
    roots = [first, second]

    with caplog.at_level(logging.INFO, logger="faceclip_core.faces.model_packs"):
        chosen = resolve_auto_pack(roots)
    assert chosen.name == "antelopev2" and chosen.folder == second / "antelopev2" / "antelopev2"
    assert "face model pack 'auto' chose antelopev2" in caplog.text  # the log names the pack used

    shutil.rmtree(second / "antelopev2")
    chosen = find_model_pack(roots, AUTO_PACK, with_recognizer=True)  # the loaders' entry point takes "auto"
    assert chosen.name == "buffalo_l" and chosen.detector.name == "det_10g.onnx"
    assert chosen.recognizer is not None and chosen.recognizer.name == "w600k_r50.onnx"

    shutil.rmtree(first / "buffalo_l")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="faceclip_core.faces.model_packs"):
        models = load_face_models(roots, AUTO_PACK)
    assert models.detector.pack.name == "zz_custom" and models.recognizer is None
    assert "passed over unusable pack" in caplog.text and "aa_broken" in caplog.text


def test_a_broken_antelopev2_does_not_hide_a_working_buffalo_l(tmp_path, caplog):
    broken_pack(tmp_path / "antelopev2")
    make_pack(tmp_path / "buffalo_l", "buffalo_l")
    with caplog.at_level(logging.WARNING, logger="faceclip_core.faces.model_packs"):
        assert resolve_auto_pack(tmp_path).name == "buffalo_l"
    assert "antelopev2" in caplog.text and "not a readable ONNX" in caplog.text


def test_auto_without_any_pack_gives_the_no_pack_message(tmp_path):
    (tmp_path / "empty_root" / "notes").mkdir(parents=True)  # a folder without .onnx files is no pack
    with pytest.raises(FaceModelError) as err:
        load_face_models([tmp_path / "empty_root", tmp_path / "missing_root"], AUTO_PACK)
    msg = str(err.value)
    assert "no insightface model pack found" in msg and "antelopev2 or buffalo_l" in msg
    assert str(tmp_path / "empty_root") in msg and str(tmp_path / "missing_root") in msg
    assert INSIGHTFACE_MODEL_ZOO in msg and INSIGHTFACE_LICENCE in msg and "Nothing is downloaded" in msg
    assert "scrfd_10g_bnkps.onnx" in msg and "det_10g.onnx" in msg


def test_auto_with_only_broken_packs_says_what_is_wrong(tmp_path):
    broken_pack(tmp_path / "antelopev2")
    with pytest.raises(FaceModelError) as err:
        resolve_auto_pack([tmp_path])
    msg = str(err.value)
    assert "none can be used" in msg and "det_10g.onnx" in msg and "not a readable ONNX" in msg
    assert "not found" not in msg


def test_a_named_pack_that_is_missing_points_at_the_installed_ones(tmp_path):
    make_pack(tmp_path / "buffalo_l", "buffalo_l", recognizer=False)
    with pytest.raises(FaceModelError) as err:
        find_model_pack([tmp_path], "antelopev2")  # an old workflow's value on a buffalo_l-only machine
    msg = str(err.value)
    assert "'antelopev2' not found" in msg and "Installed here: buffalo_l" in msg and "'auto'" in msg
