"""The Train node's per-method settings and the conversion of API graphs saved by release 0.1.0."""
from __future__ import annotations

import json

import pytest

from faceclip_core.identity import IdentityError
from faceclip_core.identity.config import IDEAConfig, SeFiConfig, method_config
from faceclip_core.identity.node_inputs import (
    DEFAULT_BATCH,
    DEFAULT_LR,
    METHOD_SETTINGS,
    is_flat,
    method_settings,
    migrate_flat_inputs,
)
from tests.conftest import REPO

RELEASE = REPO / "tests" / "fixtures" / "release_0.1.0"


def saved_train_inputs(method: str) -> dict:
    """The Train node's inputs in the API graph of the release's workflow for ``method``."""
    (path,) = RELEASE.glob(f"* ({method}).api.json")
    (node,) = [n for n in json.loads(path.read_text()).values() if n["class_type"] == "FaceCLIPTrainIDEmbedding"]
    return node["inputs"]


def test_the_defaults_the_node_shows_are_what_a_run_of_the_release_trained_with():
    assert (DEFAULT_LR, DEFAULT_BATCH) == (0.005, 1)
    assert METHOD_SETTINGS["ID-EA"]["num_tokens"] == 2 and METHOD_SETTINGS["SeFi-IDE"]["num_tokens"] == 1
    assert METHOD_SETTINGS["SeFi-IDE"]["stages"] == SeFiConfig.stages
    assert METHOD_SETTINGS["ID-EA"]["reg_weight"] == IDEAConfig.reg_weight


@pytest.mark.parametrize("method", ["ID-EA", "SeFi-IDE"])
def test_a_release_graph_converts_to_the_values_it_trained_with(method):
    old = saved_train_inputs(method)
    assert is_flat(old) and old["learning_rate"] == 0 and old["batch_size"] == 0 and old["num_tokens"] == 0
    new = migrate_flat_inputs(old)
    assert not is_flat(new)
    assert new["method"] == method and new["learning_rate"] == 0.005 and new["batch_size"] == 1
    assert {k[len("method."):] for k in new if k.startswith("method.")} == set(METHOD_SETTINGS[method])
    assert new["method.num_tokens"] == METHOD_SETTINGS[method]["num_tokens"]
    assert "recipe" not in new and not any(k in new for k in METHOD_SETTINGS[method])
    assert new["model"] == old["model"] and new["faces"] == old["faces"]  # links stay links
    # the settings reach the config the release built from the flat inputs
    nested = {k[len("method."):]: v for k, v in new.items() if k.startswith("method.")}
    config = method_config(method, steps=1, lr=new["learning_rate"], seed=0, batch_size=new["batch_size"],
                           micro_batch=0, precision="fp32", class_word="person", **method_settings(method, nested))
    assert config.num_tokens == METHOD_SETTINGS[method]["num_tokens"] and config.train.lr == 0.005


def test_the_paper_recipe_and_values_set_by_hand_are_kept():
    old = {**saved_train_inputs("ID-EA"), "recipe": "paper"}
    assert (migrate_flat_inputs(old)["learning_rate"], migrate_flat_inputs(old)["batch_size"]) == (0.012, 8)
    old.update(learning_rate=0.002, batch_size=3, num_tokens=4)
    new = migrate_flat_inputs(old)
    assert (new["learning_rate"], new["batch_size"], new["method.num_tokens"]) == (0.002, 3, 4)


def test_a_graph_saved_before_the_optional_inputs_gets_their_release_values():
    old = {k: v for k, v in saved_train_inputs("SeFi-IDE").items()
           if k not in ("num_tokens", "attention_tokens", "recipe", "flip", "micro_batch")}
    new = migrate_flat_inputs(old)
    assert new["method.num_tokens"] == 1 and new["method.attention_tokens"] == "all"  # that release's default


def test_a_linked_method_cannot_be_converted_and_says_what_to_change():
    with pytest.raises(IdentityError, match="^This Train ID Embedding node is from an older version"):
        migrate_flat_inputs({**saved_train_inputs("ID-EA"), "method": ["7", 0]})


def test_method_settings_take_the_picked_methods_values_only():
    chosen = method_settings("SeFi-IDE", {"method": "SeFi-IDE", "stages": 3, "num_tokens": 2})
    assert chosen["stages"] == 3 and chosen["num_tokens"] == 2 and chosen["reg_weight"] == IDEAConfig.reg_weight
    assert method_settings("ID-EA", {"stages": 3})["stages"] == SeFiConfig.stages  # not ID-EA's: ignored
    with pytest.raises(IdentityError):
        method_settings("DreamBooth", {})
