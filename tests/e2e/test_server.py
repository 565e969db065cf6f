"""The pack inside a real ComfyUI server."""
from __future__ import annotations

from tests.e2e.conftest import PACK_DIR_NAME


def test_server_loads_the_pack_without_import_errors(client, comfy_server):
    log = comfy_server.log_text()
    assert "IMPORT FAILED" not in log, log
    assert "Cannot import" not in log, log
    # ComfyUI lists the import time of every custom node folder it loaded
    assert PACK_DIR_NAME in log, log
