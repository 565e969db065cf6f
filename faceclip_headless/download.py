"""The explicit download command: fetch the main job's weights into a ComfyUI, for users with network access.

    python -m faceclip_headless.download --comfyui /path/to/ComfyUI [--only encoder,unet,vae] [--keep-originals]
    python -m faceclip_headless.download --comfyui /path/to/ComfyUI --variant flux     (FaceT5-FLUX, 36 GB)

By default the FaceCLIP-SDXL files are fetched. FaceT5-FLUX's two files (face_t5_encoder.pt 12.5 GB and dit.pt
23.8 GB; converting needs as much again in free disk for a while) are opt-in: ``--variant flux``, or by name in
``--only`` (facet5_encoder, facet5_dit).

This is the only code in the pack that uses the network, and only when run by hand. Each file:
- is checked against the SHA-256 its host publishes for it (Hugging Face's X-Linked-Etag of LFS files); a file
  whose checksum cannot be learned or does not match is refused, never placed;
- resumes from its `.part` file after an interruption (HTTP Range);
- never overwrites an existing model (a finished file is skipped);
- is refused before a byte is written when the disk lacks room for it (and for its converted copy);
- FaceCLIP's pickles are then converted to safetensors (faceclip_core.convert, weights_only loading) and the
  originals deleted unless --keep-originals.
insightface's antelopev2 pack is not downloaded: its host publishes no checksum and its licence (non-commercial
research only) is for you to accept; the command says where to put it. Nor is FLUX.1-dev's VAE (gated behind
its licence on Hugging Face).
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from faceclip_core.atomic import publish
from faceclip_core.faces.model_packs import INSIGHTFACE_LICENCE, INSIGHTFACE_MODEL_ZOO

from .model_files import FLUX_MAIN_JOB_MODELS, MAIN_JOB_MODELS, RequiredModel
from .network import NETWORK_ERRORS, network_failure

logger = logging.getLogger(__name__)

HF = "https://huggingface.co"
CHUNK = 8 * 2**20


class DownloadError(RuntimeError):
    """A download was refused or failed; the partial file is kept for a later resume unless it is corrupt."""


@dataclass(frozen=True)
class Download:
    key: str
    repo_path: str  # "<hf repo>/resolve/main/<file>"
    folder: str  # ComfyUI model folder
    name: str  # final file name in that folder
    convert: bool = False  # an official pickle to convert to safetensors
    variant: str = "sdxl"  # the set --variant selects (sdxl: the default; flux: FaceT5-FLUX, opt-in)


VARIANTS = ("sdxl", "flux")
DOWNLOADS = (
    Download("encoder", "ByteDance/FaceCLIP/resolve/main/model/face_clip_encoder.pt", "faceclip",
             "faceclip_sdxl_encoder.safetensors", convert=True),
    Download("unet", "ByteDance/FaceCLIP/resolve/main/model/unet.pt", "diffusion_models",
             "faceclip_sdxl_unet.safetensors", convert=True),
    Download("vae", "stabilityai/sdxl-vae/resolve/main/sdxl_vae.safetensors", "vae", "sdxl_vae.safetensors"),
    Download("facet5_encoder", "ByteDance/FaceCLIP/resolve/main/model/face_t5_encoder.pt", "faceclip",
             "facet5_encoder.safetensors", convert=True, variant="flux"),
    Download("facet5_dit", "ByteDance/FaceCLIP/resolve/main/model/dit.pt", "diffusion_models",
             "facet5_flux_dit.safetensors", convert=True, variant="flux"),
)
FLUX_VAE_HINT = ("FaceT5-FLUX also needs FLUX.1-dev's VAE: download ae.safetensors yourself from "
                 "https://huggingface.co/black-forest-labs/FLUX.1-dev (gated: accept its licence there) to %s.")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        return None  # keep the first answer: Hugging Face puts the checksum on the redirect itself


def published_checksum(url: str) -> tuple[str, int]:
    """(sha256 hex, size) the host publishes for ``url``; raises DownloadError when it publishes none."""
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, method="HEAD")
    try:
        response = opener.open(request, timeout=60)  # noqa: S310 - https URL built from constants
        headers = response.headers
    except urllib.error.HTTPError as exc:
        if exc.code not in (301, 302, 303, 307, 308):
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        headers = exc.headers
    except NETWORK_ERRORS as exc:
        raise DownloadError(f"{network_failure(exc, url)}; check the network (and any proxy), then run the "
                            "command again") from exc
    etag = (headers.get("X-Linked-Etag") or "").strip('"').lower()
    size = headers.get("X-Linked-Size") or headers.get("Content-Length")
    if len(etag) != 64 or any(c not in "0123456789abcdef" for c in etag) or not size:
        raise DownloadError(f"{url}: the host publishes no SHA-256 for this file, so it cannot be verified; "
                            "download it by hand instead")
    return etag, int(size)


def _sha256_of(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    if path.exists():
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
    return digest


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def ensure_room(folder: Path, needed: int, what: str) -> None:
    """Refuse, before a byte is written, a download (and its conversion) the disk cannot hold."""
    free = free_bytes(folder)
    if free < needed:
        raise DownloadError(f"{what} needs {needed / 1e9:.1f} GB free in {folder}, but only {free / 1e9:.1f} GB "
                            "are free: make room there (or pass --models-dir on a bigger disk) and run again")


def part_size(part: Path) -> int:
    return part.stat().st_size if part.exists() else 0


def _receive(url: str, part: Path, have: int, size: int, digest: hashlib._Hash) -> tuple[int, hashlib._Hash]:
    """Append the rest of ``url`` (from byte ``have``) to ``part``; returns the bytes held and their digest."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - https URL from constants
        if have and response.status != 206:  # the server ignored the range: start over
            have, digest = 0, hashlib.sha256()
        name = part.name.removesuffix(".part")
        logger.info("%s: %s %.1f MB of %.1f MB", name, "resuming at" if have else "downloading", have / 1e6,
                    size / 1e6)
        with open(part, "ab" if have else "wb") as f:
            next_report = have + size // 20
            while block := response.read(CHUNK):
                f.write(block)
                digest.update(block)
                have += len(block)
                if have >= next_report:
                    logger.info("%s: %d%%", name, 100 * have // size)
                    next_report += size // 20
    return have, digest


def fetch(url: str, target: Path, then_converted: bool = False) -> Path:
    """Download ``url`` to ``target`` (verified, resumable); returns ``target``. An existing target is kept.
    ``then_converted``: room is needed for a converted copy of about the same size too."""
    if target.exists():
        logger.info("%s exists; skipped", target)
        return target
    sha256, size = published_checksum(url)
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    have = part_size(part)
    if have > size:
        part.unlink()
        have = 0
    ensure_room(target.parent, size - have + (size if then_converted else 0),
                f"{target.name} ({size / 1e9:.1f} GB{', then converted' if then_converted else ''})")
    digest = _sha256_of(part)
    if have < size:
        try:
            have, digest = _receive(url, part, have, size, digest)
        except NETWORK_ERRORS as exc:  # the .part file keeps what arrived
            raise DownloadError(f"{target.name}: {network_failure(exc, url)} after {part_size(part) / 1e6:.1f} of "
                                f"{size / 1e6:.1f} MB; run the command again to resume") from exc
    if have < size:
        raise DownloadError(f"{target.name}: the connection ended at {have / 1e6:.1f} of {size / 1e6:.1f} MB; "
                            "run the command again to resume")
    if have != size or digest.hexdigest() != sha256:
        part.unlink()
        raise DownloadError(f"{target.name}: checksum mismatch (got {have} bytes, sha256 {digest.hexdigest()}; "
                            f"expected {size} bytes, {sha256}); the partial file was deleted, run again")
    publish(part, target, overwrite=False)
    logger.info("%s: verified (sha256 %s)", target, sha256)
    return target


def install(item: Download, models_dir: Path, base_url: str = HF, keep_originals: bool = False) -> Path:
    final = models_dir / item.folder / item.name
    if final.exists():
        logger.info("%s exists; skipped", final)
        return final
    url = f"{base_url.rstrip('/')}/{item.repo_path}"
    if not item.convert:
        return fetch(url, final)
    original = fetch(url, models_dir / ".faceclip_downloads" / Path(item.repo_path).name, then_converted=True)
    from faceclip_core.convert import convert  # torch is only needed for this step

    final.parent.mkdir(parents=True, exist_ok=True)
    convert(original, final)
    if not keep_originals:
        original.unlink()
    return final


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(prog="python -m faceclip_headless.download", description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", type=Path, help="ComfyUI folder (its models/ receives the files)")
    p.add_argument("--models-dir", type=Path, help="a models folder to fill instead of <ComfyUI>/models")
    p.add_argument("--variant", choices=VARIANTS, default="sdxl",
                   help="sdxl: FaceCLIP-SDXL's files (the default); flux: FaceT5-FLUX's (36 GB)")
    p.add_argument("--only", default=None,
                   help="comma-separated files instead of the variant's: " + ", ".join(d.key for d in DOWNLOADS))
    p.add_argument("--keep-originals", action="store_true", help="keep the official .pt files after converting")
    p.add_argument("--base-url", default=HF, help=argparse.SUPPRESS)  # a mirror, or a local server in tests
    args = p.parse_args(argv)
    models = args.models_dir or (args.comfyui / "models" if args.comfyui else None)
    if models is None:
        p.error("give --comfyui or --models-dir")
    only = args.only if args.only is not None else ",".join(d.key for d in DOWNLOADS if d.variant == args.variant)
    wanted = {k.strip() for k in only.split(",") if k.strip()}
    unknown = wanted - {d.key for d in DOWNLOADS}
    if unknown:
        p.error(f"unknown --only entries: {', '.join(sorted(unknown))}")
    logger.info("FaceCLIP weights are licensed CC-BY-NC-4.0 (non-commercial use only).")
    failed = 0
    for item in DOWNLOADS:
        if item.key in wanted:
            try:
                install(item, models, args.base_url, args.keep_originals)
            except NETWORK_ERRORS as exc:  # raised outside fetch's own wording (the conversion reads no network)
                logger.error("%s: %s", item.key, network_failure(exc, f"{args.base_url}/{item.repo_path}"))
                failed += 1
            except (DownloadError, OSError, ValueError) as exc:
                # The .part file stays for the next run to resume from.
                logger.error("%s: %s", item.key, exc)
                failed += 1
    # reminders for what this command does not fetch, only while it is missing
    flux_vae, face_pack = FLUX_MAIN_JOB_MODELS[2], MAIN_JOB_MODELS[-1]
    if any(d.variant == "flux" and d.key in wanted for d in DOWNLOADS) and _missing(flux_vae, models):
        logger.info(FLUX_VAE_HINT, models / "vae" / "ae.safetensors")
    if _missing(face_pack, models):
        logger.info("Face detection pack: download insightface's antelopev2 (or buffalo_l) yourself from %s (%s) "
                    "and unzip it so that %s exists.", INSIGHTFACE_MODEL_ZOO, INSIGHTFACE_LICENCE,
                    models / "insightface" / "antelopev2" / "scrfd_10g_bnkps.onnx")
    return 1 if failed else 0


def _missing(model: RequiredModel, models: Path) -> bool:
    return not any(model.present(models / model.folder / name) for name in model.names)


if __name__ == "__main__":
    sys.exit(main())
