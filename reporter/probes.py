"""Stage 2: the probe set (bundled or the user's), tokenized, truncated to the model's limits."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from reporter.errors import InputError

PROBE_SET_VERSION = "v1"
Category = Literal["prose", "delimiters", "code", "induction", "long", "user"]
MAX_PROBE_FILE_BYTES = 1_000_000  # a probe file is text a person wrote; 1 MB is far past that
INDUCTION_PERIOD = 64  # length of the random block that is repeated
DISPLAY_PROBE = "prose"
_BYTE_WHITESPACE = re.compile(r"<0x0[9AD]>")

_DATA = Path(__file__).parent / "data" / "probes"
# (name, category, file): the bundled set. The induction probe is generated from the vocabulary.
_BUNDLED: tuple[tuple[str, Category, str], ...] = (
    ("prose", "prose", "prose.txt"),
    ("prose_2", "prose", "prose_2.txt"),
    ("delimiters", "delimiters", "delimiters.txt"),
    ("code", "code", "code.txt"),
    ("long_passage", "long", "long_passage.txt"),
)


@dataclass(frozen=True)
class Probe:
    name: str
    category: Category
    text: str


@dataclass(frozen=True)
class TokenizedProbe:
    """A probe as the model sees it. `period` is set for the repeated random-token probe."""

    name: str
    category: Category
    input_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    is_delimiter: tuple[bool, ...]
    n_tokens_original: int
    period: int | None = None
    is_special: tuple[bool, ...] = ()  # the tokenizer's special tokens (BOS, [CLS], [SEP]); () = none known

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def truncated(self) -> bool:
        return self.n_tokens < self.n_tokens_original


def display_probe_name(probes: list[TokenizedProbe]) -> str:
    """The probe shown in the head grid and rollout: the bundled short prose, else the first probe."""
    names = [p.name for p in probes]
    return DISPLAY_PROBE if DISPLAY_PROBE in names else names[0]


def bundled_probes() -> list[Probe]:
    return [Probe(n, c, (_DATA / f).read_text(encoding="utf-8").strip()) for n, c, f in _BUNDLED]


def read_probe_file(path: str | Path) -> list[Probe]:
    """User probes: UTF-8 text, blocks separated by blank lines, one probe per block."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"probe file '{path}' does not exist", "check the --probes path")
    size = p.stat().st_size
    if size > MAX_PROBE_FILE_BYTES:
        raise InputError(f"probe file '{path}' is {size / 1e6:.1f} MB, over the 1 MB limit",
                         "use a few paragraphs of text; long inputs are cut to --max-tokens anyway")
    raw = p.read_bytes()
    if b"\x00" in raw:
        raise InputError(f"probe file '{path}' looks binary (it contains NUL bytes)",
                         "pass a UTF-8 text file with probes separated by blank lines")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"probe file '{path}' is not UTF-8 (bad byte at offset {exc.start})",
                         "re-save it as UTF-8") from None
    blocks = [b.strip() for b in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))]
    blocks = [b for b in blocks if b]
    if not blocks:
        raise InputError(f"probe file '{path}' is empty", "write one or more paragraphs separated by blank lines")
    return [Probe(f"user_{i + 1}", "user", b) for i, b in enumerate(blocks)]


def _display_str(tokenizer: Any, tid: int) -> str:
    tok = tokenizer.convert_ids_to_tokens([tid])[0]
    return str(tok) if tok is not None else f"<{tid}>"


def is_delimiter_token(token_str: str, is_special: bool) -> bool:
    """Punctuation, whitespace/newline or special tokens ([CLS], [SEP], BOS, ...)."""
    if is_special:
        return True
    if _BYTE_WHITESPACE.fullmatch(token_str):
        return True  # SentencePiece byte fallback for tab, newline, carriage return
    core = token_str.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n").replace("ĉ", "\t").replace("č", "\r")
    core = core.replace("##", "")
    if core.strip() == "":
        return True  # whitespace or newline tokens
    return all(unicodedata.category(ch).startswith("P") or ch.isspace() for ch in core)


def tokenize_probes(probes: list[Probe], tokenizer: Any, *, max_tokens: int, include_induction: bool,
                    seed: int) -> tuple[list[TokenizedProbe], list[str]]:
    """Tokenize, truncate to max_tokens, and add the induction probe. Returns probes and notices."""
    notices: list[str] = []
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    out: list[TokenizedProbe] = []
    for pr in probes:
        full = list(tokenizer(pr.text)["input_ids"])
        ids = full
        if len(full) > max_tokens:
            ids = list(tokenizer(pr.text, truncation=True, max_length=max_tokens)["input_ids"])
            notices.append(f"probe '{pr.name}' has {len(full)} tokens; analysed its first {len(ids)} "
                           f"(limit {max_tokens}).")
        if len(ids) < 2:
            notices.append(f"probe '{pr.name}' has {len(ids)} token(s); skipped (attention needs at least 2).")
            continue
        out.append(_make(pr.name, pr.category, ids, tokenizer, special, len(full)))
    if include_induction:
        out.append(induction_probe(tokenizer, seed=seed, max_tokens=max_tokens, special=special))
    if not out:
        raise InputError("no probe has at least 2 tokens", "give longer probe texts")
    return out, notices


def _make(name: str, category: Category, ids: list[int], tokenizer: Any, special: set[int], n_orig: int,
          period: int | None = None) -> TokenizedProbe:
    toks = tuple(_display_str(tokenizer, t) for t in ids)
    delim = tuple(is_delimiter_token(s, t in special) for s, t in zip(toks, ids))
    unk = getattr(tokenizer, "unk_token_id", None)  # [UNK] stands for a word, not structure
    return TokenizedProbe(name, category, tuple(int(i) for i in ids), toks, delim, n_orig, period,
                          tuple(t in special and t != unk for t in ids))


def induction_probe(tokenizer: Any, *, seed: int, max_tokens: int, special: set[int]) -> TokenizedProbe:
    """A block of random ordinary tokens repeated twice (Olsson et al. 2022), wrapped like real text.

    The wrapping (BOS, or [CLS] ... [SEP]) comes from the tokenizer itself, so the probe looks to the
    model like any other input. `period` is the distance between a token and its earlier copy.
    """
    wrapped = list(tokenizer("x")["input_ids"])
    x_ids = [t for t in tokenizer("x", add_special_tokens=False)["input_ids"]]
    start = wrapped.index(x_ids[0]) if x_ids and x_ids[0] in wrapped else len(wrapped)
    prefix, suffix = wrapped[:start], wrapped[start + len(x_ids):]
    room = max_tokens - len(prefix) - len(suffix)
    period = min(INDUCTION_PERIOD, room // 2)
    rng = np.random.default_rng(seed)
    vocab = int(getattr(tokenizer, "vocab_size", 0) or len(tokenizer))
    lo = min(1000, vocab // 4)  # skip the low ids, where byte and special tokens usually live
    period = min(period, len(set(range(lo, vocab)) - special))  # a tiny vocabulary caps the block
    block: list[int] = []
    while len(block) < period:
        t = int(rng.integers(lo, vocab))
        if t not in special and t not in block:
            block.append(t)
    ids = prefix + block + block + suffix
    return _make("induction_random", "induction", ids, tokenizer, special, len(ids), period=period)
