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


class RandomConditioning(io.ComfyNode):
    """SDXL-shaped conditioning from a seed: a baseline that involves no FaceCLIP code at all."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_RandomConditioning", category="testing",
                         inputs=[io.Int.Input("seed", default=0), io.Int.Input("batch", default=1, min=1)],
                         outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, seed: int, batch: int) -> io.NodeOutput:
        import torch

        g = torch.Generator().manual_seed(seed)
        cond = torch.randn(batch, 77, 2048, generator=g)
        return io.NodeOutput([[cond, {"pooled_output": torch.randn(batch, 1280, generator=g)}]])


class DeviceMemory(io.ComfyNode):
    """Reports the torch device and its peak memory so far (CUDA only), after the image it is given."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_DeviceMemory", category="testing",
                         inputs=[io.Image.Input("after")], outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, after) -> io.NodeOutput:
        import comfy.model_management as mm
        import torch

        device = mm.get_torch_device()
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        return io.NodeOutput(ui={"memory": [{"device": str(device), "peak_allocated_bytes": peak}]})


class TestingExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [ConditioningShapes, RandomConditioning, DeviceMemory]


async def comfy_entrypoint() -> TestingExtension:
    return TestingExtension()
