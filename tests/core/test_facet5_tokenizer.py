"""FaceT5's tokenizers: T5 (tokenizers library on ComfyUI's tokenizer.json, 512 ids, </s>, pad 0) and CLIP-L (the
pack's BPE with Hugging Face CLIPTokenizer conventions: pad EOS, no HTML unescaping), against the fixture's ids."""
from __future__ import annotations

import hashlib
import sys

import pytest
import torch

from faceclip_core.errors import FaceCLIPInputError, MissingPackageError
from faceclip_core.facet5 import FaceT5TokenizerError, find_t5_tokenizer, tokenize, tokenize_clip, tokenize_t5
from faceclip_core.facet5.tokenizer import T5Tokenizer, get_t5_tokenizer
from faceclip_core.sdxl.tokenizer import EOT_ID, SOT_ID, get_tokenizer
from tests.conftest import comfyui_dir
from tests.core._facet5_fixture import (
    CASES,
    T5_TOKENIZER_SHA256,
    case_prompts,
    case_tokens,
    config,
    t5_tokenizer_json,
)


def test_the_test_comfyui_ships_the_fixtures_t5_tokenizer():
    """The fixture's T5 ids came from this exact file: otherwise the comparisons below prove nothing."""
    assert hashlib.sha256(t5_tokenizer_json().read_bytes()).hexdigest() == T5_TOKENIZER_SHA256


@pytest.mark.parametrize("case", CASES)
def test_t5_ids_match_fixture(case):
    ids = tokenize_t5(case_prompts(case), t5_tokenizer_json())
    assert ids.dtype == torch.long and torch.equal(ids, case_tokens(case)[0])
    lengths = get_t5_tokenizer(t5_tokenizer_json())(case_prompts(case)).lengths
    assert lengths == [t["untruncated_n_ids_incl_eos"] for t in config()["cases"][case]["t5_tokens"]]


@pytest.mark.parametrize("case", CASES)
def test_clip_ids_match_fixture(case):
    ids = tokenize_clip(case_prompts(case))
    assert ids.dtype == torch.long and torch.equal(ids, case_tokens(case)[1])


def test_both_at_once():
    t5, clip = tokenize(case_prompts("c"), t5_tokenizer_json())
    assert torch.equal(t5, case_tokens("c")[0]) and torch.equal(clip, case_tokens("c")[1])


def test_clip_conventions_differ_from_faceclip_sdxl_where_they_should():
    """Case f has "&amp;" in a text with a "<": ftfy then leaves the entity alone (it looks like HTML), and so does
    Hugging Face's CLIPTokenizer, while open_clip (FaceCLIP-SDXL's) unescapes it itself. Rows are padded with EOS
    instead of 0."""
    from faceclip_core.sdxl.tokenizer import tokenize as sdxl_tokenize

    prompt = case_prompts("f")
    assert not torch.equal(sdxl_tokenize(prompt), tokenize_clip(prompt))
    bpe = get_tokenizer()
    kept = [*bpe.encode("salt &"), *bpe.encode("amp ;"), *bpe.encode("pepper")]
    assert tokenize_clip(["a < b, salt &amp; pepper"])[0, 5:11].tolist() == [*kept, EOT_ID]
    # without a "<", ftfy unescapes the entity in both conventions
    assert torch.equal(tokenize_clip(["salt &amp; pepper"]), tokenize_clip(["salt & pepper"]))
    row = tokenize_clip(["a cat"])[0]
    assert row[:4].tolist() == [SOT_ID, *bpe.encode("a cat"), EOT_ID] and (row[3:] == EOT_ID).all()


def test_clip_special_token_literals_are_those_tokens():
    """The slow CLIPTokenizer splits out "<|endoftext|>" / "<|startoftext|>" typed in a prompt as the special ids;
    pooled is then read at the first EOS (argmax), as in the official model."""
    row = tokenize_clip(["a <|endoftext|> cat"])[0].tolist()
    cat = get_tokenizer().encode("cat")
    assert row[:5] == [SOT_ID, *get_tokenizer().encode("a"), EOT_ID, *cat, EOT_ID]
    assert tokenize_clip(["<|startoftext|>x"])[0, 1].item() == SOT_ID


def test_t5_truncation_and_padding():
    path = t5_tokenizer_json()
    tok = get_t5_tokenizer(path)
    word = tok._plain.encode("cat", add_special_tokens=False).ids
    assert len(word) == 1
    for n, truncated in ((510, False), (511, False), (512, True), (700, True)):
        ids = tokenize_t5([" ".join(["cat"] * n)], path)[0]
        kept = min(n, 511)
        assert ids[:kept].tolist() == word * kept and ids[kept].item() == 1, n  # </s> after the kept ids
        assert (ids[kept + 1:] == 0).all(), n
        assert (tok([" ".join(["cat"] * n)]).lengths[0] > 512) == truncated
    empty = tokenize_t5([""], path)[0]
    assert empty[0].item() == 1 and (empty[1:] == 0).all()
    assert tokenize_t5([], path).shape == (0, 512)


def test_t5_tokenizer_is_found_next_to_comfyui():
    root = comfyui_dir()
    assert find_t5_tokenizer(root) == t5_tokenizer_json()
    assert find_t5_tokenizer(root / "comfy") == t5_tokenizer_json()  # the comfy package folder works too


def test_t5_tokenizer_is_found_from_an_imported_comfy_package(monkeypatch):
    fake = type(sys)("comfy")
    fake.__file__ = str(comfyui_dir() / "comfy" / "__init__.py")
    monkeypatch.setitem(sys.modules, "comfy", fake)
    assert find_t5_tokenizer() == t5_tokenizer_json()


def test_t5_tokenizer_is_found_from_comfys_namespace_package(monkeypatch):
    """ComfyUI's comfy folder has no __init__.py: the imported package has a __path__ and no __file__."""
    fake = type(sys)("comfy")
    fake.__path__ = [str(comfyui_dir() / "comfy")]
    monkeypatch.setitem(sys.modules, "comfy", fake)
    assert find_t5_tokenizer() == t5_tokenizer_json()


def test_missing_t5_tokenizer_is_explained(tmp_path):
    with pytest.raises(FaceT5TokenizerError, match="comfy/text_encoders/t5_tokenizer/tokenizer.json.*t5_tokenizer="):
        find_t5_tokenizer(tmp_path)
    with pytest.raises(FaceT5TokenizerError, match="not found"):
        T5Tokenizer(tmp_path / "tokenizer.json")


def test_a_file_that_is_not_a_t5_tokenizer_is_refused(tmp_path):
    import tokenizers

    other = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    path = tmp_path / "tokenizer.json"
    other.save(str(path))
    with pytest.raises(FaceT5TokenizerError, match="is not a T5 tokenizer"):
        T5Tokenizer(path)
    path.write_text("{not json")
    with pytest.raises(FaceT5TokenizerError, match="cannot read"):
        T5Tokenizer(path)


def test_missing_tokenizers_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers -> ImportError
    with pytest.raises(MissingPackageError, match=r"'tokenizers'.*pip install \"tokenizers>=0\.13\.3\""):
        T5Tokenizer(t5_tokenizer_json())


@pytest.mark.parametrize("bad", [[1], [None], "one string", ["\udcff"]])
def test_bad_prompts(bad):
    with pytest.raises(FaceCLIPInputError):
        tokenize_t5(bad, t5_tokenizer_json())
    with pytest.raises(FaceCLIPInputError):
        tokenize_clip(bad)


def test_the_official_negative_is_cut_only_where_flux_cuts_it_and_nobody_is_warned(caplog):
    """The shipped negative is 109 CLIP-L tokens: CLIP-L (the pooled summary) reads 77 as the official FLUX
    pipeline does, T5 reads it whole. That is no warning; a prompt T5 cuts is one."""
    from faceclip_core.facet5 import FACET5_NEGATIVE

    assert get_tokenizer()([FACET5_NEGATIVE]).lengths[0] > 77  # the case that used to warn on every run
    with caplog.at_level("DEBUG"):
        tokenize(["A woman, smiling", FACET5_NEGATIVE], t5_tokenizer_json())
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []

    from faceclip_core.facet5.tokenizer import cut_notices
    assert cut_notices({"negative prompt": FACET5_NEGATIVE}, t5_tokenizer_json()) == []

    long_prompt = ", ".join(f"detail number {i}" for i in range(150))
    n = get_t5_tokenizer(t5_tokenizer_json())([long_prompt]).lengths[0]
    assert n > 512
    assert cut_notices({"prompt": long_prompt, "negative prompt": FACET5_NEGATIVE}, t5_tokenizer_json()) == [
        f"Shorten the prompt: it is {n} tokens long, and FaceT5's T5 reads only the first 512; the rest is ignored."]
    with caplog.at_level("WARNING"):
        tokenize_t5([long_prompt], t5_tokenizer_json())
    assert "only the first 512 are used" in caplog.text  # the log keeps saying it too
