"""Stand-in insightface model packs for offline tests (no real SCRFD/ArcFace weights exist here).

The files are real ONNX models run by real onnxruntime and loaded by insightface's real
``SCRFD`` / ``ArcFaceONNX`` classes, with the real models' signatures:

* detector: input ``input.1`` ``[1, 3, H, W]`` (H, W dynamic like SCRFD-10G; or fixed
  with ``static_size``), nine outputs score/bbox/kps for strides 8/16/32 with two anchors
  per cell (``[N, 1]``, ``[N, 4]``, ``[N, 10]``, or ``[1, N, C]`` with ``batched=True``),
  named like antelopev2's ``scrfd_10g_bnkps.onnx`` (``score_8`` ...) or like buffalo_l's
  ``det_10g.onnx`` (numeric names).
* recognizer: ``[N, 3, 112, 112]`` -> ``[N, 512]``, a fixed random projection of the
  8x8 average-pooled crop, so embeddings depend on the aligned pixels.

How the stand-in detector "sees" faces (so tests know the answers): a face is a filled
rectangle of marker colour, R >= 231, 151 <= B <= 210, G <= 140 (pink; painted as
(255, G, 180) by :func:`paint_face`). R and B differ on purpose: an image passed in the
wrong channel order (RGB where insightface wants BGR) shows no face at all.
The graph finds, for every anchor inside such a rectangle, the distances to the
rectangle's edges (a cumulative max done with dilated 1x2 max-pools, on the stride-8
anchor lattice), so the decoded box is the rectangle in the detector frame. A marker
must cover at least one stride-8 anchor (about 8 detector pixels) to be seen.
Its score is ``1 - G/255`` (G in 0..127 gives 1.0..0.5), and its five landmarks sit at
the ArcFace template positions with the rectangle standing in for the 112x112 crop
(:func:`expected_landmarks`).
With ``max_face_px`` set, rectangles taller or wider than that many detector pixels are
not reported, like real SCRFD missing faces that fill the frame; the pipeline's retry at
smaller detector sizes then finds them.

Nothing here is downloaded; files are written where the caller says (a pytest tmp dir).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
KPS_FRACTIONS = ARCFACE_TEMPLATE_112 / 112.0

STRIDES = (8, 16, 32)
# blob = (pixel - 127.5) / 128, as insightface's SCRFD prepares it
_MEAN, _STD = 127.5, 128.0
_R_MIN, _B_MIN, _B_MAX, _G_MAX = 230.5, 150.5, 210.5, 140.5
MARKER_BLUE = 180
_BIG = 1.0e5
_MAX_REACH_LOG2 = 11  # cumulative max reaches 2047 px: detector sizes up to 2048

# Output names of the two real packs.
BNKPS_NAMES = tuple(f"{k}_{s}" for k in ("score", "bbox", "kps") for s in STRIDES)
DET10G_NAMES = ("448", "471", "494", "451", "474", "497", "454", "477", "500")


@dataclass(frozen=True)
class MarkerFace:
    """A face for the stand-in detector: pixel box ``(x0, y0, x1, y1)`` (numpy slice
    edges, x1/y1 exclusive) and the score it should get."""

    box: tuple[int, int, int, int]
    score: float = 0.9

    @property
    def green(self) -> int:
        return int(round(255.0 * (1.0 - self.score)))

    @property
    def reported_score(self) -> float:
        return 1.0 - self.green / 255.0

    @property
    def landmarks(self) -> np.ndarray:
        return expected_landmarks(self.box)


def expected_landmarks(box: Sequence[float]) -> np.ndarray:
    """The five landmarks the stand-in detector reports for a marker rectangle."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.stack([x0 + KPS_FRACTIONS[:, 0] * (x1 - x0),
                     y0 + KPS_FRACTIONS[:, 1] * (y1 - y0)], axis=1)


def paint_face(image: np.ndarray, face: MarkerFace | Sequence[int], score: float | None = None
               ) -> np.ndarray:
    """Paint a marker face into an RGB uint8 image in place (and return it)."""
    if not isinstance(face, MarkerFace):
        face = MarkerFace(tuple(int(v) for v in face), 0.9 if score is None else score)
    if not 0.5 < face.score <= 1.0:
        raise ValueError("marker scores must lie in (0.5, 1.0]")
    x0, y0, x1, y1 = face.box
    image[y0:y1, x0:x1] = (255, face.green, MARKER_BLUE)
    return image


def scene(height: int, width: int, faces: Iterable[MarkerFace | Sequence[int]] = (),
          background: int = 128) -> np.ndarray:
    """A grey RGB uint8 image with the given marker faces painted on it."""
    img = np.full((height, width, 3), background, np.uint8)
    for f in faces:
        paint_face(img, f)
    return img


# ---------------------------------------------------------------- ONNX builders


class _Graph:
    """Tiny helper to build an ONNX graph without repeating boilerplate."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def const(self, value, dtype=np.float32) -> str:
        from onnx import numpy_helper

        self._n += 1
        name = f"c{self._n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], out: str | None = None, **attrs) -> str:
        from onnx import helper

        self._n += 1
        out = out or f"t{self._n}"
        # Names never start with "Sub"/"Mul": insightface's ArcFace reads such names as
        # an MXNet-style model with built-in normalisation.
        self.nodes.append(helper.make_node(op_type, list(inputs), [out],
                                           name=f"n{self._n}_{op_type.lower()}", **attrs))
        return out


def _cummax(g: _Graph, x: str, axis: int, forward: bool) -> str:
    """Cumulative max along H (axis 2) or W (axis 3) by doubling dilated max-pools.

    forward: out[i] = max(x[0..i]); backward: out[i] = max(x[i..end]). Each step pads
    with a value below everything (onnxruntime wants MaxPool pads smaller than the
    kernel, so the padding is an explicit Pad) and takes max(x[i], x[i -/+ d])."""
    low = g.const(-4.0 * _BIG)
    for k in range(_MAX_REACH_LOG2):
        d = 1 << k
        pads = [0] * 8  # [n, c, h, w] begins, then [n, c, h, w] ends
        pads[axis if forward else 4 + axis] = d
        padded = g.op("Pad", [x, g.const(pads, np.int64), low], mode="constant")
        kernel = [2, 1] if axis == 2 else [1, 2]
        dil = [d, 1] if axis == 2 else [1, d]
        x = g.op("MaxPool", [padded], kernel_shape=kernel, dilations=dil, strides=[1, 1])
    return x


def upload_scenes(client, folder: Path, pictures: dict[str, np.ndarray]) -> dict[str, str]:
    """Save each picture as ``folder/<name>`` and upload it to a ComfyUI (faceclip_headless.client.ComfyClient)'s
    input folder; returns the names the server stored them under."""
    from PIL import Image

    names = {}
    for name, pixels in pictures.items():
        Image.fromarray(pixels).save(folder / name)
        names[name] = client.upload_image(folder / name, overwrite=True)
    return names


def make_scrfd(path: str | os.PathLike, *, names: Sequence[str] = BNKPS_NAMES,
               static_size: int | None = None, batched: bool = False,
               max_face_px: float | None = None, with_kps: bool = True) -> Path:
    """Write a stand-in SCRFD detector (see the module docstring) and return its path."""
    from onnx import TensorProto, helper

    n_out = 9 if with_kps else 6
    if len(names) < n_out:
        raise ValueError(f"need {n_out} output names")
    g = _Graph()
    x = "input.1"

    def channel(c: int) -> str:
        return g.op("Slice", [x, g.const([c], np.int64), g.const([c + 1], np.int64),
                              g.const([1], np.int64)])

    r, gr, b = channel(0), channel(1), channel(2)
    to_blob = lambda p: (p - _MEAN) / _STD  # noqa: E731
    is_r = g.op("Greater", [r, g.const(to_blob(_R_MIN))])
    is_b = g.op("And", [g.op("Greater", [b, g.const(to_blob(_B_MIN))]),
                        g.op("Less", [b, g.const(to_blob(_B_MAX))])])
    is_g = g.op("Less", [gr, g.const(to_blob(_G_MAX))])
    mask = g.op("Cast", [g.op("And", [g.op("And", [is_r, is_b]), is_g])], to=TensorProto.FLOAT)
    bg = g.op("Sub", [g.const(1.0), mask])  # 1 outside faces

    shape = g.op("Shape", [x])
    hh = g.op("Cast", [g.op("Gather", [shape, g.const(2, np.int64)], axis=0)],
              to=TensorProto.FLOAT)
    ww = g.op("Cast", [g.op("Gather", [shape, g.const(3, np.int64)], axis=0)],
              to=TensorProto.FLOAT)
    xs = g.op("Reshape", [g.op("Range", [g.const(0.0), ww, g.const(1.0)]),
                          g.const([1, 1, 1, -1], np.int64)])
    ys = g.op("Reshape", [g.op("Range", [g.const(0.0), hh, g.const(1.0)]),
                          g.const([1, 1, -1, 1], np.int64)])

    # Every anchor of strides 16 and 32 is also a stride-8 anchor, so everything is
    # computed on the stride-8 lattice only: horizontal runs on every 8th row, vertical
    # runs on every 8th column (8x less work than the full frame).
    def every8(m: str, axes: Sequence[int]) -> str:
        n = len(axes)
        return g.op("Slice", [m, g.const([0] * n, np.int64), g.const([2 ** 30] * n, np.int64),
                              g.const(list(axes), np.int64), g.const([8] * n, np.int64)])

    bg_rows, bg_cols = every8(bg, [2]), every8(bg, [3])

    def last_bg_before(bgm: str, coord: str, axis: int) -> str:
        # background pixels carry their coordinate, face pixels -1; forward cummax
        a = g.op("Add", [g.op("Mul", [bgm, g.op("Add", [coord, g.const(1.0)])]),
                         g.const(-1.0)])
        return _cummax(g, a, axis, forward=True)

    def first_bg_after(bgm: str, coord: str, axis: int, limit: str) -> str:
        # background pixels carry -coordinate, face pixels -BIG; backward cummax, negate
        a = g.op("Add", [g.op("Mul", [bgm, g.op("Sub", [g.const(_BIG), coord])]),
                         g.const(-_BIG)])
        return g.op("Min", [g.op("Neg", [_cummax(g, a, axis, forward=False)]), limit])

    left = every8(g.op("Sub", [g.op("Sub", [xs, last_bg_before(bg_rows, xs, 3)]),
                               g.const(1.0)]), [3])
    right = every8(g.op("Sub", [first_bg_after(bg_rows, xs, 3, ww), xs]), [3])
    top = every8(g.op("Sub", [g.op("Sub", [ys, last_bg_before(bg_cols, ys, 2)]),
                              g.const(1.0)]), [2])
    bottom = every8(g.op("Sub", [first_bg_after(bg_cols, ys, 2, hh), ys]), [2])

    green = g.op("Add", [g.op("Mul", [every8(gr, [2, 3]), g.const(_STD)]), g.const(_MEAN)])
    score = g.op("Mul", [g.op("Sub", [g.const(1.0), g.op("Div", [green, g.const(255.0)])]),
                         every8(mask, [2, 3])])
    if max_face_px is not None:
        for lo, hi in ((left, right), (top, bottom)):
            ok = g.op("Cast", [g.op("Less", [g.op("Add", [lo, hi]),
                                              g.const(float(max_face_px))])],
                      to=TensorProto.FLOAT)
            score = g.op("Mul", [score, ok])
    dist = g.op("Concat", [left, top, right, bottom], axis=1)  # [1, 4, H/8, W/8]
    # kps relative to the anchor: x = -left + fx * (left + right), y likewise
    wk = np.zeros((10, 4, 1, 1), np.float32)
    for i, (fx, fy) in enumerate(KPS_FRACTIONS):
        wk[2 * i, 0], wk[2 * i, 2] = fx - 1.0, fx
        wk[2 * i + 1, 1], wk[2 * i + 1, 3] = fy - 1.0, fy
    kps = g.op("Conv", [dist, g.const(wk)], kernel_shape=[1, 1])

    def per_anchor(m: str, stride: int, width: int, out: str, divide: bool) -> str:
        step = stride // 8  # maps are already on the stride-8 lattice
        sub = g.op("Slice", [m, g.const([0, 0], np.int64), g.const([2 ** 30, 2 ** 30], np.int64),
                             g.const([2, 3], np.int64), g.const([step, step], np.int64)])
        if divide:  # insightface multiplies box/kps distances by the stride
            sub = g.op("Div", [sub, g.const(float(stride))])
        hwc = g.op("Unsqueeze", [g.op("Transpose", [sub], perm=[0, 2, 3, 1]),
                                 g.const([3], np.int64)])  # [1, h, w, 1, C]
        two = g.op("Concat", [hwc, hwc], axis=3)  # two anchors per cell, same prediction
        target = [1, -1, width] if batched else [-1, width]
        return g.op("Reshape", [two, g.const(target, np.int64)], out=out)

    outputs = []
    groups = [(score, 1, False), (dist, 4, True)] + ([(kps, 10, True)] if with_kps else [])
    for gi, (m, width, divide) in enumerate(groups):
        for si, stride in enumerate(STRIDES):
            name = names[gi * 3 + si]
            per_anchor(m, stride, width, name, divide)
            dims = [1, f"n{stride}", width] if batched else [f"n{stride}", width]
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
    hw = [static_size, static_size] if static_size else ["height", "width"]
    inp = helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 3, *hw])
    return _save_model(helper.make_graph(g.nodes, "standin_scrfd", [inp], outputs, g.inits), path)


def make_arcface(path: str | os.PathLike, *, seed: int = 0, size: int = 112,
                 dim: int = 512) -> Path:
    """Write a stand-in ArcFace recognizer ``[N,3,size,size] -> [N,dim]``."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    pool = size // 8
    w = (rng.standard_normal((3 * 8 * 8, dim)) / np.sqrt(192)).astype(np.float32)
    g = _Graph()
    p = g.op("AveragePool", ["input.1"], kernel_shape=[pool, pool], strides=[pool, pool])
    f = g.op("Flatten", [p], axis=1)
    g.op("MatMul", [f, g.const(w)], out="683")
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, size, size])
    out = helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", dim])
    return _save_model(helper.make_graph(g.nodes, "standin_arcface", [inp], [out], g.inits), path)


def _save_model(graph, path: str | os.PathLike) -> Path:
    """A checked opset-13 model of ``graph`` written to ``path`` (folders made as needed)."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


PACK_FILES = {
    # pack name -> (detector file, detector output names, recognizer file)
    "antelopev2": ("scrfd_10g_bnkps.onnx", BNKPS_NAMES, "glintr100.onnx"),
    "buffalo_l": ("det_10g.onnx", DET10G_NAMES, "w600k_r50.onnx"),
}


def make_pack(folder: str | os.PathLike, pack: str = "antelopev2", *,
              recognizer: bool = True, **detector_kwargs) -> Path:
    """Write a stand-in model pack folder (detector + optional recognizer), return it."""
    det_name, names, rec_name = PACK_FILES[pack]
    folder = Path(folder)
    make_scrfd(folder / det_name, names=names, **detector_kwargs)
    if recognizer:
        make_arcface(folder / rec_name)
    return folder


# ---------------------------------------------------------------- real photos (offline)

#: Five landmarks read off offline photos by eye (left eye, right eye, nose, mouth left,
#: mouth right): skimage.data.astronaut() and three faces of insightface's t1.jpg.
ASTRONAUT_KPS = np.array([[203, 101], [247, 101], [225, 125], [208, 146], [242, 146]],
                         np.float32)
T1_KPS = (
    np.array([[326, 180], [370, 180], [350, 204], [332, 228], [366, 228]], np.float32),
    np.array([[500, 310], [554, 304], [524, 336], [504, 364], [550, 360]], np.float32),
    np.array([[800, 356], [850, 352], [826, 380], [804, 406], [848, 400]], np.float32),
)


def astronaut_rgb() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def insightface_image_rgb(name: str) -> np.ndarray:
    """insightface's bundled sample ('t1', 'Tom_Hanks_54745') as RGB (it loads BGR)."""
    from insightface.data import get_image

    return np.ascontiguousarray(get_image(name)[..., ::-1])
