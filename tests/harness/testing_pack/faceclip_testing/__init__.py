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
            report.append({"shape": list(tensor.shape), "dtype": str(tensor.dtype),
                           "finite": bool(tensor.isfinite().all()),
                           "extras": {k: list(v.shape) if hasattr(v, "shape") else repr(v)
                                      for k, v in extras.items()}})
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


class SaveConditioning(io.ComfyNode):
    """Writes a CONDITIONING's first tensor and pooled output to output/<name>.safetensors (tests read it)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_SaveConditioning", category="testing",
                         inputs=[io.Conditioning.Input("conditioning"), io.String.Input("name")], outputs=[],
                         is_output_node=True)

    @classmethod
    def execute(cls, conditioning, name: str) -> io.NodeOutput:
        import os

        import folder_paths
        from safetensors.torch import save_file

        tensor, extras = conditioning[0]
        path = os.path.join(folder_paths.get_output_directory(), f"{name}.safetensors")
        tensors = {"cond": tensor.float().contiguous()}
        if extras.get("pooled_output") is not None:
            tensors["pooled"] = extras["pooled_output"].float().contiguous()
        save_file(tensors, path)
        return io.NodeOutput(ui={"saved": [path]})


class ProbeSample(io.ComfyNode):
    """KSampler (euler, normal) that records what the model receives, after all other patches and wrappers:
    per model call the sigma, cond_or_uncond and per batch row the sums of the cross-attention context and of the
    ADM vector's pooled part; per cross-attention call the block, sigma, context length, cond_or_uncond and per
    row the sums of
    its keys' and values' context and whether they are equal; per forward call of the diffusion model (the UNet
    itself, however its caller batches) the sigma and the batch size. Also reports the given positive's and
    negative's sums and the class of the model patcher that sampled."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_ProbeSample", category="testing",
                         inputs=[io.Model.Input("model"), io.Conditioning.Input("positive"),
                                 io.Conditioning.Input("negative"), io.Latent.Input("latent"),
                                 io.Int.Input("steps", default=4), io.Float.Input("cfg", default=5.0)],
                         outputs=[io.Latent.Output()], is_output_node=True)

    @classmethod
    def execute(cls, model, positive, negative, latent, steps: int, cfg: float) -> io.NodeOutput:
        import comfy.patcher_extension
        import torch

        import nodes

        records, model_calls = [], []

        def probe(n, context, value, extra):
            value = context if value is None else value
            records.append({
                "block": list(extra.get("block", ())), "cond_or_uncond": list(extra.get("cond_or_uncond", [])),
                "sigma": float(extra["sigmas"].reshape(-1)[0]), "length": int(context.shape[1]),
                "rows": [{"context": float(context[i].float().sum()), "value": float(value[i].float().sum()),
                          "same": bool(torch.equal(context[i], value[i]))} for i in range(context.shape[0])]})
            return n, context, value

        def model_call(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
            y = kwargs.get("y")
            model_calls.append({
                "sigma": float(t.reshape(-1)[0]), "cond_or_uncond": list(transformer_options["cond_or_uncond"]),
                "rows": [{"context": float(c_crossattn[i].float().sum()), "length": int(c_crossattn.shape[1]),
                          "pooled": None if y is None else float(y[i, :1280].float().sum())}
                         for i in range(c_crossattn.shape[0])]})
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

        unet_calls = []

        def unet_call(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
            unet_calls.append({"sigma": float(transformer_options["sigmas"].reshape(-1)[0]), "batch": int(x.shape[0])})
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)

        probed = model.clone()
        probed.set_model_attn2_patch(probe)  # runs after the patches already on the model
        probed.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "faceclip_test_probe", model_call)
        probed.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "faceclip_test_probe",
                                    unet_call)
        (out,) = nodes.common_ksampler(probed, 0, steps, cfg, "euler", "normal", positive, negative, latent)
        sums = {"positive": float(positive[0][0].float().sum()), "negative": float(negative[0][0].float().sum()),
                "patcher": type(probed).__name__}
        return io.NodeOutput(out, ui={"calls": records, "model_calls": model_calls, "unet_calls": unet_calls,
                                      "given": [sums]})


class SaveStageContexts(io.ComfyNode):
    """Writes the per-stage keys/values/pooled that Apply ID Embedding put into a conditioning's first entry to
    output/<name>.safetensors (what the sampler must route to)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_SaveStageContexts", category="testing",
                         inputs=[io.Conditioning.Input("conditioning"), io.String.Input("name")], outputs=[],
                         is_output_node=True)

    @classmethod
    def execute(cls, conditioning, name: str) -> io.NodeOutput:
        import os

        import folder_paths
        from safetensors.torch import save_file

        (stages,) = conditioning[0][1]["model_conds"]["faceclip_id_stages"].rows
        path = os.path.join(folder_paths.get_output_directory(), f"{name}.safetensors")
        save_file({"keys": stages.keys.float().contiguous(), "values": stages.values.float().contiguous(),
                   "pooled": stages.pooled.float().contiguous()}, path)
        return io.NodeOutput(ui={"saved": [path]})


def _allow_dynamic_patcher_on_cpu() -> None:
    """ComfyUI's dynamic VRAM patcher hands CPU devices to the classic patcher in its __new__; the test server
    runs on the CPU, so that reroute is turned off here (the class's own code runs unchanged) and comfy-aimdo's
    host-side library is loaded, as main.py loads it at start-up when dynamic VRAM is on."""
    import importlib

    import comfy.model_patcher
    import comfy_aimdo.control

    if comfy_aimdo.control.lib is None:
        comfy_aimdo.control.init()
        for name in ("host_buffer", "model_mmap", "model_vbar", "vram_buffer"):  # they bound the library at import
            importlib.reload(importlib.import_module(f"comfy_aimdo.{name}"))
    dynamic = comfy.model_patcher.ModelPatcherDynamic
    if "__new__" in dynamic.__dict__:
        dynamic.__new__ = lambda cls, *args, **kwargs: object.__new__(cls)


class DynamicUNETLoader(io.ComfyNode):
    """UNETLoader under ComfyUI's dynamic VRAM patcher (ModelPatcherDynamic, the default on NVIDIA GPUs)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_DynamicUNETLoader", category="testing",
                         inputs=[io.String.Input("unet_name")], outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, unet_name: str) -> io.NodeOutput:
        import comfy.model_patcher
        import comfy.sd
        import folder_paths

        _allow_dynamic_patcher_on_cpu()
        core = comfy.model_patcher.CoreModelPatcher
        comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic  # what main.py sets
        try:
            model = comfy.sd.load_diffusion_model(folder_paths.get_full_path_or_raise("diffusion_models", unet_name))
        finally:
            comfy.model_patcher.CoreModelPatcher = core
        assert model.is_dynamic(), type(model)
        return io.NodeOutput(model)


class SDXLParts(io.ComfyNode):
    """MODEL, CLIP, VAE as a CheckpointLoaderSimple of SDXL would give: the tiny UNet and VAE and a random
    full-size SDXL CLIP (written by tests/harness/sdxl_clip.py on first use)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_SDXLParts", category="testing", inputs=[],
                         outputs=[io.Model.Output(), io.Clip.Output(), io.Vae.Output()])

    @classmethod
    def execute(cls) -> io.NodeOutput:
        import importlib.util
        from pathlib import Path

        import folder_paths

        import nodes

        harness = Path(__file__).resolve().parents[2]
        spec = importlib.util.spec_from_file_location("faceclip_test_sdxl_clip", harness / "sdxl_clip.py")
        sdxl_clip = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sdxl_clip)
        sdxl_clip.write(Path(folder_paths.get_folder_paths("text_encoders")[0]))
        (model,) = nodes.UNETLoader().load_unet("tiny_sdxl_unet.safetensors", "default")
        (clip,) = nodes.DualCLIPLoader().load_clip(sdxl_clip.CLIP_L_NAME, sdxl_clip.CLIP_G_NAME, "sdxl")
        (vae,) = nodes.VAELoader().load_vae("tiny_sdxl_vae.safetensors")
        return io.NodeOutput(model, clip, vae)


class DynamicFaceCLIPLoader(io.ComfyNode):
    """This pack's Load FaceCLIP under ComfyUI's dynamic VRAM patcher (what main.py sets on NVIDIA GPUs)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_DynamicFaceCLIPLoader", category="testing",
                         inputs=[io.String.Input("encoder_name")], outputs=[io.Custom("FACECLIP").Output()])

    @classmethod
    def execute(cls, encoder_name: str) -> io.NodeOutput:
        import comfy.model_patcher

        import nodes

        _allow_dynamic_patcher_on_cpu()
        core = comfy.model_patcher.CoreModelPatcher
        comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
        try:
            loaded = nodes.NODE_CLASS_MAPPINGS["FaceCLIPLoader"].execute(encoder_name, "auto", "auto")
        finally:
            comfy.model_patcher.CoreModelPatcher = core
        return io.NodeOutput(loaded.args[0])


class ModelManagerState(io.ComfyNode):
    """Reports a FACECLIP's patcher (class, loaded bytes, size, whether the model manager holds it loaded),
    after ``free`` asked the manager for all the device's memory, as a UNet that needs it does."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_ModelManagerState", category="testing",
                         inputs=[io.Custom("FACECLIP").Input("faceclip"), io.Conditioning.Input("after"),
                                 io.Boolean.Input("free", default=False)],
                         outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, faceclip, after, free: bool) -> io.NodeOutput:
        import comfy.model_management as mm

        patcher = faceclip.patcher
        if free:
            mm.free_memory(1e30, patcher.load_device)
        held = [m for m in mm.current_loaded_models if m.model is patcher]
        state = {"patcher": type(patcher).__name__, "dynamic": patcher.is_dynamic(), "size": patcher.model_size(),
                 "loaded": patcher.loaded_size(), "held": bool(held)}
        return io.NodeOutput(ui={"state": [state]})


class PartialLoadEncode(io.ComfyNode):
    """Loads a FACECLIP's weights only partly (as --lowvram or a full GPU does: the rest stays on the offload
    device and is cast per layer), encodes a prompt without a face and saves the result to output/<name>."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_PartialLoadEncode", category="testing",
                         inputs=[io.Custom("FACECLIP").Input("faceclip"), io.String.Input("text"),
                                 io.Float.Input("fraction", default=0.3), io.String.Input("name")],
                         outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, faceclip, text: str, fraction: float, name: str) -> io.NodeOutput:
        import os

        import comfy.model_management as mm
        import folder_paths
        import torch
        from safetensors.torch import save_file

        patcher = faceclip.patcher
        mm.unload_all_models()
        budget = int(patcher.model_size() * fraction)
        patcher.load(patcher.load_device, lowvram_model_memory=budget)
        try:
            state = {"lowvram": bool(patcher.model.model_lowvram), "budget": budget,
                     "loaded": int(patcher.model.model_loaded_weight_memory), "size": patcher.model_size()}
            emb, pooled = faceclip.encoder.encode(torch.zeros(1, 3, 112, 112), [text], torch.zeros(1, dtype=torch.bool))
        finally:
            patcher.detach()
        save_file({"cond": emb.float().contiguous(), "pooled": pooled.float().contiguous()},
                  os.path.join(folder_paths.get_output_directory(), f"{name}.safetensors"))
        return io.NodeOutput(ui={"state": [state]})


class LoadedModels(io.ComfyNode):
    """Passes a LATENT through (wire it between KSampler and VAEDecode) and reports what the model manager holds at
    that point: per loaded model its patcher class, model class, size and loaded bytes, and whether it is the given
    FACECLIP's or a diffusion model; the FACECLIP's own state (held or not, loaded bytes) and the device's memory."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_LoadedModels", category="testing",
                         inputs=[io.Latent.Input("latent"), io.Custom("FACECLIP").Input("faceclip", optional=True)],
                         outputs=[io.Latent.Output()], is_output_node=True)

    @classmethod
    def execute(cls, latent, faceclip=None) -> io.NodeOutput:
        import comfy.model_base
        import comfy.model_management as mm
        import torch

        patcher = None if faceclip is None else faceclip.patcher
        device = mm.get_torch_device()
        models = []
        for loaded in mm.current_loaded_models:
            model = loaded.model
            if model is None:
                continue
            models.append({"patcher": type(model).__name__, "model": type(model.model).__name__,
                           "faceclip": model is patcher,
                           "diffusion": isinstance(model.model, comfy.model_base.BaseModel),
                           "dynamic": model.is_dynamic(), "size": model.model_size(), "loaded": model.loaded_size(),
                           "device": str(loaded.device)})
        state = {"device": str(device), "models": models, "faceclip": None,
                 "free_bytes": int(mm.get_free_memory(device)), "total_bytes": int(mm.get_total_memory(device)),
                 "allocated_bytes": int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else None}
        if patcher is not None:
            state["faceclip"] = {"patcher": type(patcher).__name__, "dynamic": patcher.is_dynamic(),
                                 "load_device": str(patcher.load_device), "size": patcher.model_size(),
                                 "loaded": patcher.loaded_size(),
                                 "held": any(m.model is patcher for m in mm.current_loaded_models)}
        return io.NodeOutput(latent, ui={"loaded_models": [state]})


# Model calls recorded by RecordModelCalls, per name, until ModelCalls reports (and clears) them.
_MODEL_CALLS: dict[str, list[dict]] = {}


class RecordModelCalls(io.ComfyNode):
    """A MODEL whose every call of the diffusion model is recorded under ``name`` (after all other patches and
    wrappers, as the model receives it): sigma, cond_or_uncond, the cross-attention context's shape and per-row
    sums, the pooled vector's (``y``) shape and the ``guidance`` values. Wire the sampler's output through
    ModelCalls to read them."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_RecordModelCalls", category="testing",
                         inputs=[io.Model.Input("model"), io.String.Input("name")], outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model, name: str) -> io.NodeOutput:
        import comfy.patcher_extension

        calls = _MODEL_CALLS.setdefault(name, [])

        def model_call(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
            y, guidance = kwargs.get("y"), kwargs.get("guidance")
            calls.append({
                "sigma": float(t.reshape(-1)[0]), "cond_or_uncond": list(transformer_options["cond_or_uncond"]),
                "context_shape": list(c_crossattn.shape),
                "context_sums": [float(c_crossattn[i].float().sum()) for i in range(c_crossattn.shape[0])],
                "y_shape": None if y is None else list(y.shape),
                "guidance": None if guidance is None else [float(g) for g in guidance.reshape(-1)]})
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

        recorded = model.clone()
        recorded.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "faceclip_test_record",
                                      model_call)
        return io.NodeOutput(recorded)


class ModelCalls(io.ComfyNode):
    """Passes a LATENT through (wire it after the sampler) and reports, then forgets, the calls RecordModelCalls
    recorded under ``name``."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_ModelCalls", category="testing",
                         inputs=[io.Latent.Input("latent"), io.String.Input("name")], outputs=[io.Latent.Output()],
                         is_output_node=True)

    @classmethod
    def execute(cls, latent, name: str) -> io.NodeOutput:
        return io.NodeOutput(latent, ui={"model_calls": _MODEL_CALLS.pop(name, [])})


def _patcher_state(patcher) -> dict:
    import comfy.model_management as mm

    return {"patcher": type(patcher).__name__, "model": type(patcher.model).__name__,
            "load_device": str(patcher.load_device), "size": patcher.model_size(), "loaded": patcher.loaded_size(),
            "held": any(m.model is patcher for m in mm.current_loaded_models)}


class FaceT5State(io.ComfyNode):
    """Passes a LATENT through (wire it after the sampler) and reports the FACECLIP_FACET5's patcher and the
    diffusion models the model manager holds; with ``free``, then asks the manager for all the encoder device's
    memory while keeping the diffusion models, as loading a DiT that needs the memory does on a GPU (on the CPU
    ComfyUI never frees for a load), and reports again."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_FaceT5State", category="testing",
                         inputs=[io.Custom("FACECLIP_FACET5").Input("facet5"), io.Latent.Input("after"),
                                 io.Boolean.Input("free", default=False)],
                         outputs=[io.Latent.Output()], is_output_node=True)

    @classmethod
    def execute(cls, facet5, after, free: bool) -> io.NodeOutput:
        import comfy.model_base
        import comfy.model_management as mm

        def report() -> dict:
            diffusion = [m for m in mm.current_loaded_models
                         if m.model is not None and isinstance(m.model.model, comfy.model_base.BaseModel)]
            return {"encoder": _patcher_state(facet5.patcher),
                    "diffusion": [{"model": type(m.model.model).__name__, **_patcher_state(m.model)}
                                  for m in diffusion]}

        state = {"before": report()}
        if free:
            keep = [m for m in mm.current_loaded_models
                    if m.model is not None and isinstance(m.model.model, comfy.model_base.BaseModel)]
            mm.free_memory(1e30, facet5.patcher.load_device, keep_loaded=keep)
            state["after_free"] = report()
        return io.NodeOutput(after, ui={"state": [state]})


_LOAD_CALLS: list[dict] = []


def _record_model_loads() -> None:
    """Every call of ComfyUI's ``load_models_gpu`` is recorded (which models with which weight dtypes, the memory
    it was asked to keep free, whether a full load was forced) and then made as it was asked: ModelLoads reports
    them."""
    import comfy.model_management as mm

    if getattr(mm.load_models_gpu, "_faceclip_recorded", False):
        return
    load = mm.load_models_gpu

    def recorded(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                 force_full_load=False):
        _LOAD_CALLS.append({"models": [type(getattr(m, "model", m)).__name__ for m in models],
                            "weight_dtypes": [sorted({str(p.dtype) for p in getattr(m, "model", m).parameters()})
                                              for m in models],
                            "memory_required": float(memory_required), "force_full_load": bool(force_full_load)})
        return load(models, memory_required=memory_required, force_patch_weights=force_patch_weights,
                    minimum_memory_required=minimum_memory_required, force_full_load=force_full_load)

    recorded._faceclip_recorded = True
    mm.load_models_gpu = recorded


class ModelLoads(io.ComfyNode):
    """Reports, then forgets, the model manager's load calls since the last report (wire it after the node whose
    loads are wanted; ``after`` takes any STRING output), and the model classes it holds now."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="FaceCLIPTest_ModelLoads", category="testing",
                         inputs=[io.String.Input("after")], outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, after: str) -> io.NodeOutput:
        import comfy.model_management as mm

        calls = list(_LOAD_CALLS)
        _LOAD_CALLS.clear()
        held = [type(m.model.model).__name__ for m in mm.current_loaded_models if m.model is not None]
        return io.NodeOutput(ui={"loads": calls, "held": [held]})


class TestingExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [ConditioningShapes, RandomConditioning, DeviceMemory, SaveConditioning, ProbeSample, SDXLParts,
                SaveStageContexts, DynamicUNETLoader, DynamicFaceCLIPLoader, ModelManagerState, PartialLoadEncode,
                LoadedModels, RecordModelCalls, ModelCalls, FaceT5State, ModelLoads]


async def comfy_entrypoint() -> TestingExtension:
    _record_model_loads()
    return TestingExtension()
