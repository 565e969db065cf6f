"""The download command against a real HTTP server on 127.0.0.1 that behaves like Hugging Face: the file URL
redirects to a CDN and the redirect carries the file's SHA-256 (X-Linked-Etag) and size; the CDN honours Range."""
from __future__ import annotations

import hashlib
import http.server
import logging
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from faceclip_core import load_encoder, load_facet5_encoder
from faceclip_core.convert import flux_dit
from faceclip_headless import download as download_module
from faceclip_headless.download import DOWNLOADS, main
from tests.core._encoder_fixture import fixture_state_dict
from tests.harness import tiny_facet5


class FakeHub(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.files: dict[str, bytes] = {}  # repo path -> content
        self.published: dict[str, str | None] = {}  # repo path -> sha256 the hub claims (None: no LFS checksum)
        self.cut_next_download_at: int | None = None  # close the connection after this many bytes, once
        self.ranges: list[str | None] = []
        self.requested: list[str] = []  # every path asked for (HEAD and GET)

    def publish(self, repo_path: str, data: bytes, sha256: str | None = "real") -> None:
        self.files[repo_path] = data
        self.published[repo_path] = hashlib.sha256(data).hexdigest() if sha256 == "real" else sha256

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class HubHandler(http.server.BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _redirect(self, repo_path: str) -> None:
        self.send_response(302)
        self.send_header("Location", f"/cdn/{repo_path}")
        if self.server.published[repo_path]:
            self.send_header("X-Linked-Etag", f'"{self.server.published[repo_path]}"')
        self.send_header("X-Linked-Size", str(len(self.server.files[repo_path])))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        path = self.path.lstrip("/")
        self.server.requested.append(path)
        if path in self.server.files:
            self._redirect(path)
        else:
            self.send_error(404)

    def do_GET(self) -> None:
        path = self.path.lstrip("/")
        self.server.requested.append(path)
        if path in self.server.files:
            return self._redirect(path)
        if not path.startswith("cdn/") or path[4:] not in self.server.files:
            return self.send_error(404)
        data = self.server.files[path[4:]]
        rng = self.headers.get("Range")
        self.server.ranges.append(rng)
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        cut = self.server.cut_next_download_at
        if cut is not None:
            self.server.cut_next_download_at = None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)  # the network drops mid-file
            return
        self.wfile.write(body)


@pytest.fixture
def hub():
    server = FakeHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def repo_path(key: str) -> str:
    return next(d.repo_path for d in DOWNLOADS if d.key == key)


def download(hub: FakeHub, models: Path, *only: str) -> int:
    return main(["--models-dir", str(models), "--only", ",".join(only), "--base-url", hub.url])


def test_downloads_verifies_and_never_downloads_twice(hub, tmp_path):
    data = bytes(range(256)) * 4000
    hub.publish(repo_path("vae"), data)
    assert download(hub, tmp_path, "vae") == 0
    target = tmp_path / "vae" / "sdxl_vae.safetensors"
    assert target.read_bytes() == data
    assert not list(tmp_path.rglob("*.part"))
    hub.ranges.clear()
    assert download(hub, tmp_path, "vae") == 0
    assert hub.ranges == []  # already there: nothing fetched


def test_an_interrupted_download_resumes_where_it_stopped(hub, tmp_path):
    data = bytes(reversed(range(256))) * 40000
    hub.publish(repo_path("vae"), data)
    hub.cut_next_download_at = 3_000_000
    assert download(hub, tmp_path, "vae") == 1
    part = tmp_path / "vae" / "sdxl_vae.safetensors.part"
    assert 0 < part.stat().st_size < len(data)
    assert not (tmp_path / "vae" / "sdxl_vae.safetensors").exists()
    kept = part.stat().st_size
    assert download(hub, tmp_path, "vae") == 0
    assert hub.ranges[-1] == f"bytes={kept}-"  # only the rest was fetched
    assert (tmp_path / "vae" / "sdxl_vae.safetensors").read_bytes() == data


def test_a_checksum_mismatch_places_nothing(hub, tmp_path):
    hub.publish(repo_path("vae"), b"tampered" * 1000, sha256=hashlib.sha256(b"the real file").hexdigest())
    assert download(hub, tmp_path, "vae") == 1
    assert not (tmp_path / "vae" / "sdxl_vae.safetensors").exists()
    assert not list(tmp_path.rglob("*.part"))


def test_a_file_without_a_published_checksum_is_refused(hub, tmp_path):
    hub.publish(repo_path("vae"), b"unverifiable" * 100, sha256=None)
    assert download(hub, tmp_path, "vae") == 1
    assert not (tmp_path / "vae").exists() or not any((tmp_path / "vae").iterdir())


def test_a_disk_without_room_for_the_file_and_its_conversion_is_refused_before_downloading(hub, tmp_path,
                                                                                          monkeypatch, caplog):
    data = b"x" * 3000
    hub.publish(repo_path("encoder"), data)
    monkeypatch.setattr(download_module, "free_bytes", lambda folder: 5000)  # room for the file, not its copy
    assert download(hub, tmp_path / "models", "encoder") == 1
    assert "face_clip_encoder.pt (0.0 GB, then converted) needs 0.0 GB free" in caplog.text
    assert "make room there (or pass --models-dir on a bigger disk)" in caplog.text
    assert not any(r.startswith("cdn/") for r in hub.requested)  # nothing was fetched
    assert list((tmp_path / "models").rglob("*.part")) == []
    monkeypatch.setattr(download_module, "free_bytes", lambda folder: 6000)
    hub.publish(repo_path("vae"), data)
    assert download(hub, tmp_path / "models", "vae") == 0  # no conversion: the file alone fits


def test_the_official_encoder_pickle_is_converted_to_safetensors(hub, tmp_path):
    pickle = tmp_path / "official.pt"
    torch.save({f"model.{k}": v for k, v in fixture_state_dict().items()}, pickle)
    hub.publish(repo_path("encoder"), pickle.read_bytes())
    assert download(hub, tmp_path / "models", "encoder") == 0
    converted = tmp_path / "models" / "faceclip" / "faceclip_sdxl_encoder.safetensors"
    assert converted.read_bytes()[:8] != b"PK\x03\x04"  # not a zip pickle
    encoder = load_encoder(converted)
    assert encoder.face_clip_l.positional_embedding.weight.shape[0] == 77
    assert not (tmp_path / "models" / ".faceclip_downloads" / "face_clip_encoder.pt").exists()


def test_the_facet5_files_are_opt_in_and_converted(hub, tmp_path):
    """--variant flux fetches FaceT5-FLUX's two pickles (checksums from the host, as for the SDXL files) and converts
    them; the default run never asks for them (36 GB)."""
    encoder_pt, dit_pt = tmp_path / "face_t5_encoder.pt", tmp_path / "dit.pt"
    torch.save(tiny_facet5.fixture_state_dict(), encoder_pt)
    cfg = flux_dit.FluxDiTConfig(hidden=128, depth=1, depth_single=1, in_channels=64, out_channels=64,
                                 context_dim=64, pooled_dim=128, mlp_hidden=512, head_dim=128, guidance=True)
    torch.save({k: torch.full(s, 0.5, dtype=torch.bfloat16) for k, s in flux_dit.expected_layout(cfg).items()}, dit_pt)
    hub.publish(repo_path("facet5_encoder"), encoder_pt.read_bytes())
    hub.publish(repo_path("facet5_dit"), dit_pt.read_bytes())
    assert {repo_path("facet5_encoder"), repo_path("facet5_dit")} == {
        "ByteDance/FaceCLIP/resolve/main/model/face_t5_encoder.pt", "ByteDance/FaceCLIP/resolve/main/model/dit.pt"}

    models = tmp_path / "models"
    assert main(["--models-dir", str(models), "--base-url", hub.url]) == 1  # the SDXL files: not on this hub
    assert not any("face_t5" in r or "dit.pt" in r for r in hub.requested)

    assert main(["--models-dir", str(models), "--variant", "flux", "--base-url", hub.url]) == 0
    encoder = models / "faceclip" / "facet5_encoder.safetensors"
    dit = models / "diffusion_models" / "facet5_flux_dit.safetensors"
    assert load_facet5_encoder(encoder).cfg.t5.d_model == 64
    assert flux_dit.check_state_dict(load_file(str(dit))) == cfg  # diffusers names kept for ComfyUI's UNETLoader
    assert not (models / ".faceclip_downloads" / "dit.pt").exists()  # originals removed after converting
    assert download(hub, models, "facet5_dit") == 0  # there already: skipped


def test_an_unreachable_host_is_said_in_words(tmp_path, caplog):
    from faceclip_headless.server import free_port

    port = free_port()  # nothing listens there
    assert main(["--models-dir", str(tmp_path), "--only", "vae", "--base-url", f"http://127.0.0.1:{port}"]) == 1
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line.startswith(f"vae: cannot reach 127.0.0.1:{port}: connection refused"), line
    assert "Errno" not in line and "urlopen" not in line and "Error" not in line


def test_a_dropped_connection_is_said_in_words_and_resumes(hub, tmp_path, caplog):
    hub.publish(repo_path("vae"), bytes(range(256)) * 40000)
    hub.cut_next_download_at = 3_000_000
    assert download(hub, tmp_path, "vae") == 1
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line.startswith("vae: sdxl_vae.safetensors: ") and line.endswith("run the command again to resume")
    assert "Error" not in line and "Errno" not in line, line


def _reminders(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "yourself" in r.getMessage()]


def test_reminders_name_only_the_files_that_are_missing(hub, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    (tmp_path / "faceclip").mkdir()
    (tmp_path / "faceclip" / "facet5_encoder.safetensors").write_bytes(b"there already")  # skipped, no network
    run = ["--models-dir", str(tmp_path), "--only", "facet5_encoder", "--base-url", hub.url]
    assert main(run) == 0
    flux_vae, pack = _reminders(caplog)
    assert "ae.safetensors" in flux_vae and "antelopev2" in pack

    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "ae.safetensors").write_bytes(b"placeholder")
    (tmp_path / "insightface" / "buffalo_l").mkdir(parents=True)  # either pack will do
    (tmp_path / "insightface" / "buffalo_l" / "det_10g.onnx").write_bytes(b"placeholder")
    caplog.clear()
    assert main(run) == 0
    assert _reminders(caplog) == []
