"""Loader: tiny random-init models saved to disk go through the same path as real ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from reporter.capture import attention_modules
from reporter.errors import ModelLoadError
from reporter.load import load_model, resolve_model


def test_llama_folder_loads_with_eager_attention_and_rope_facts(tiny_models: dict[str, Path]) -> None:
    m = load_model(str(tiny_models["llama"]))
    f = m.facts
    assert f.attn_implementation == "eager"
    assert (f.num_layers, f.num_heads, f.num_kv_heads) == (2, 4, 2)
    assert f.is_causal and f.position_encoding == "rope" and f.rope_theta == 10000.0
    assert f.bos_added and f.source == "folder" and f.first_token_str == "<bos>"
    assert len(attention_modules(m.model)) == 2


def test_gpt2_folder_is_causal_absolute_without_bos(tiny_models: dict[str, Path]) -> None:
    f = load_model(str(tiny_models["gpt2"])).facts
    assert f.is_causal and f.position_encoding == "absolute" and f.rope_theta is None
    assert not f.bos_added
    assert f.first_token_str == ""  # token 0 is each probe's own first word, not one fixed token
    assert f.max_position_embeddings == 128


def test_bert_folder_is_bidirectional_with_cls_first(tiny_models: dict[str, Path]) -> None:
    f = load_model(str(tiny_models["bert"])).facts
    assert not f.is_causal and f.position_encoding == "absolute"
    assert f.first_token_str == "[CLS]" and f.first_token_special


def test_missing_path_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))


def test_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_unknown_alias_suggests_the_closest_builtin() -> None:
    with pytest.raises(ModelLoadError) as exc:
        resolve_model("smollm2")
    assert "smollm2-135m" in exc.value.format_message()


def test_hub_id_is_resolved_as_hub() -> None:
    assert resolve_model("org-name/some-model").kind == "hub"
