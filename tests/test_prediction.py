"""The config's closed-form γ: `predict_gamma` on hand-built ModelFacts."""

from __future__ import annotations

import dataclasses
import math

import pytest

from reporter.analyze import predict_gamma
from reporter.load import ModelFacts


def facts(position_encoding: str = "rope", rope_theta: float | None = 1e5,
          partial_rotary_factor: float | None = None) -> ModelFacts:
    return ModelFacts(
        model_id="test/tiny", source="folder", architecture="LlamaForCausalLM", model_type="llama",
        num_layers=2, num_heads=4, num_kv_heads=2, is_causal=True,
        position_encoding=position_encoding,  # type: ignore[arg-type]
        rope_theta=rope_theta, partial_rotary_factor=partial_rotary_factor, max_position_embeddings=2048,
        bos_added=True, first_token_str="<s>", first_token_special=True, dtype="float32",
        attn_implementation="eager", device="cpu",
    )


def test_rope_prediction_matches_the_pade_closed_form():
    theta, T = 1e5, 1024
    z = 1.4142135623730951 * 1024 / 100000.0  # √2 · T / θ, by hand
    expected = (2.0 - z) / (2.0 + z)
    assert expected == pytest.approx(0.9856226, abs=1e-6)  # sanity of the hand computation
    p = predict_gamma(facts(rope_theta=theta), T)
    assert p.applies is True
    assert p.gamma == pytest.approx(expected, abs=1e-6)
    assert p.z == pytest.approx(z, abs=1e-6)
    assert p.theta == theta
    assert p.T == T
    assert p.reason


def test_longer_context_predicts_a_smaller_gamma():
    f = facts(rope_theta=1e4)
    short, long = predict_gamma(f, 256), predict_gamma(f, 4096)
    assert short.gamma is not None and long.gamma is not None
    assert long.gamma < short.gamma


@pytest.mark.parametrize("pe", ["absolute", "alibi", "other"])
def test_non_rope_models_get_no_prediction_and_a_reason(pe):
    p = predict_gamma(facts(position_encoding=pe, rope_theta=None), 512)
    assert p.applies is False
    assert p.gamma is None
    assert p.reason.strip() != ""


def test_rope_without_theta_gets_no_prediction():
    p = predict_gamma(facts(position_encoding="rope", rope_theta=None), 512)
    assert p.applies is False
    assert p.gamma is None
    assert p.reason.strip() != ""


def test_absolute_and_alibi_reasons_name_the_scheme():
    assert "absolute" in predict_gamma(facts("absolute", None), 512).reason
    assert "ALiBi" in predict_gamma(facts("alibi", None), 512).reason


@pytest.mark.parametrize("T", [141422, 200000])  # z = √2·T/1e5 ≥ 2 once T ≥ 141 421.4
def test_z_at_or_past_two_is_outside_the_form_range(T):
    assert math.sqrt(2.0) * T / 1e5 >= 2.0
    p = predict_gamma(facts(rope_theta=1e5), T)
    assert p.applies is False
    assert p.gamma is None
    assert p.reason.strip() != ""


def test_partial_rotary_factor_is_mentioned_in_the_reason():
    p = predict_gamma(dataclasses.replace(facts(), partial_rotary_factor=0.25), 1024)
    assert p.applies is True
    assert "0.25" in p.reason
