"""Nodes that exist only in the test server, to observe what flows between real nodes (ComfyUI's own test
suite does the same with its testing pack). Mounted by tests/e2e/conftest.py, never shipped to users."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io


class ConditioningShapes(io.ComfyNode):
    """Reports what a CONDITIONING carries: per entry, the tensor shape and the extras with their shapes."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_ConditioningShapes", category="testing",
                         inputs=[io.Conditioning.Input("conditioning")], outputs=[io.Conditioning.Output()],
                         is_output_node=True)

    @classmethod
    def execute(cls, conditioning) -> io.NodeOutput:
        report = []
        for tensor, extras in conditioning:
            report.append({"shape": list(tensor.shape), "dtype": str(tensor.dtype), "finite": bool(tensor.isfinite().all()),
                           "extras": {k: list(v.shape) if hasattr(v, "shape") else repr(v) for k, v in extras.items()}})
        return io.NodeOutput(conditioning, ui={"conditioning": report})


class TestingExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [ConditioningShapes]


async def comfy_entrypoint() -> TestingExtension:
    return TestingExtension()
