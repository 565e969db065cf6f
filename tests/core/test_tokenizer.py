"""faceclip_core.tokenize: open_clip SimpleTokenizer ids (ftfy, double html unescape, whitespace, lower; pad 0)."""
from __future__ import annotations

import pytest
import torch

import faceclip_core
from faceclip_core.sdxl.tokenizer import EOT_ID, SOT_ID, clean_text, get_tokenizer
from tests.core._encoder_fixture import CASES, cases, config


def test_prefix_ids_from_the_architecture_notes():
    ids = faceclip_core.tokenize(["Photo of a id person."])
    assert ids.dtype == torch.long and ids.shape == (1, 77)
    assert ids[0, :8].tolist() == [49406, 1125, 539, 320, 1014, 2533, 269, 49407]
    assert (ids[0, 8:] == 0).all()  # padding is 0, not EOT
    assert get_tokenizer().encode("id") == [1014]


def test_every_fixture_text_tokenizes_exactly():
    for case in CASES:
        texts = config()["cases"][case]["branch_texts"]
        assert torch.equal(faceclip_core.tokenize(texts), cases()[f"{case}.g.token_ids"]), case


def test_cleaning_rules():
    t = faceclip_core.tokenize
    assert torch.equal(t(["  A   Red\tCAR\n"]), t(["a red car"]))
    assert torch.equal(t(["salt &amp;amp; pepper"]), t(["salt & pepper"]))  # unescaped twice
    assert clean_text("  Tom &amp; JERRY  ") == "tom & jerry"
    assert clean_text("Ã©tÃ©") == "été"  # ftfy repairs mojibake


def test_truncation_keeps_77_and_ends_with_eot():
    ids = faceclip_core.tokenize(["word " * 200])
    assert ids.shape == (1, 77) and ids[0, 0] == SOT_ID and ids[0, -1] == EOT_ID
    assert (ids[0, 1:-1] != EOT_ID).all() and (ids[0] != 0).all()


def test_exactly_full_prompt_is_not_truncated():
    n = 75  # SOT + 75 + EOT = 77
    ids = faceclip_core.tokenize([" ".join(["cat"] * n)])
    assert ids[0, 1:76].tolist() == [get_tokenizer().encode("cat")[0]] * n and ids[0, 76] == EOT_ID


def test_non_ascii_and_batches():
    texts = ["Café", "日本", "😀", ""]
    ids = faceclip_core.tokenize(texts)
    assert ids.shape == (4, 77)
    assert ids[3, :2].tolist() == [SOT_ID, EOT_ID]
    for row in ids[:3]:
        n = int((row != 0).sum())
        assert row[0] == SOT_ID and row[n - 1] == EOT_ID and n > 2
    assert torch.equal(faceclip_core.tokenize("Café"), ids[:1])  # one string = batch of one


@pytest.mark.parametrize("bad", [[1], [None], ["ok", b"bytes"], 3, ["\udcff"]])
def test_bad_inputs(bad):
    with pytest.raises(faceclip_core.FaceCLIPInputError):
        faceclip_core.tokenize(bad)


def test_cut_notices_count_the_identity_prefix_of_a_prompt_with_a_face():
    from faceclip_core import OFFICIAL_NEGATIVE
    from faceclip_core.sdxl.encoder import cut_notices

    fits_alone = "x " * 75  # 75 + start + end = 77: fits without the prefix, not with it
    assert cut_notices({"prompt": fits_alone, "negative prompt": OFFICIAL_NEGATIVE}) == []
    assert cut_notices({"prompt": fits_alone}, with_face={"prompt"}) == [
        "Shorten the prompt: it is 83 tokens long with FaceCLIP's identity prefix (6 tokens), and FaceCLIP reads "
        "only the first 77; the rest is ignored."]
    assert cut_notices({"text": "x " * 76}) == [
        "Shorten the text: it is 78 tokens long, and FaceCLIP reads only the first 77; the rest is ignored."]
