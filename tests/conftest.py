"""Shared fixtures: tiny random-init models saved to disk (the real loading path), and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def byte_tokenizer(add_bos: bool) -> Any:
    """A byte-level tokenizer with no merges: any text works, and BOS is added or not, as asked."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<bos>": 0, "<eos>": 1, "<pad>": 2}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def save_tiny(folder: Path, kind: str) -> Path:
    """Build a tiny random-init model of the given architecture from its config and save it."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, BertConfig, GPT2Config, LlamaConfig

    torch.manual_seed(0)
    if kind == "llama":
        tok = byte_tokenizer(add_bos=True)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                          rope_theta=10000.0, bos_token_id=0, eos_token_id=1, pad_token_id=2)
        model = AutoModelForCausalLM.from_config(cfg)
    elif kind == "gpt2":
        tok = byte_tokenizer(add_bos=False)
        cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128,
                         bos_token_id=0, eos_token_id=1)
        model = AutoModelForCausalLM.from_config(cfg)
    elif kind == "bert":
        from transformers import BertTokenizerFast

        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "the", "a", "cat", "sat", "on", "mat"]
        words += [chr(c) for c in range(ord("a"), ord("z") + 1) if chr(c) not in words]
        words += ["##" + chr(c) for c in range(ord("a"), ord("z") + 1)]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.txt").write_text("\n".join(words) + "\n")
        tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
        cfg = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=128)
        model = AutoModel.from_config(cfg)
    else:
        raise ValueError(kind)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tiny")
    return {k: save_tiny(base / k, k) for k in ("llama", "gpt2", "bert")}


@pytest.fixture(scope="session")
def short_probes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("probes") / "short.txt"
    p.write_text(
        "The cat sat on the mat, and the dog sat on the log.\n\n"
        "Lists: apples, pears; plums (ripe) - and <b>bold</b> & 'quotes'.\n\n"
        + " ".join(["the old river ran slowly past the town"] * 12) + "\n",
        encoding="utf-8",
    )
    return p


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """Run attn-report as a user would: a separate process, real exit code and stderr."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "reporter", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
