"""The probe set: reading a user's probe file, spotting delimiter tokens, the bundled probes."""

from __future__ import annotations

import pytest

from reporter.errors import InputError
from reporter.probes import MAX_PROBE_FILE_BYTES, bundled_probes, is_delimiter_token, read_probe_file

# --- read_probe_file: errors name the file -----------------------------------------------------------


def _raises_naming(path, match: str) -> InputError:
    with pytest.raises(InputError) as info:
        read_probe_file(path)
    assert str(path) in info.value.message
    assert match in info.value.message
    assert info.value.hint  # every error tells the user what to do
    return info.value


def test_missing_probe_file_is_an_input_error_naming_the_file(tmp_path):
    _raises_naming(tmp_path / "nope.txt", "does not exist")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n\t\n"], ids=["zero-bytes", "whitespace-only"])
def test_empty_probe_file_is_an_input_error_naming_the_file(tmp_path, content):
    p = tmp_path / "empty.txt"
    p.write_bytes(content)
    _raises_naming(p, "empty")


def test_probe_file_with_nul_bytes_is_refused_as_binary(tmp_path):
    p = tmp_path / "blob.bin"
    p.write_bytes(b"some text\x00\x01\x02 more")
    _raises_naming(p, "binary")


def test_probe_file_that_is_not_utf8_is_an_input_error(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("café au lait".encode("latin-1"))
    err = _raises_naming(p, "not UTF-8")
    assert "offset 3" in err.message  # the é is the fourth byte


def test_probe_file_over_one_megabyte_is_an_input_error(tmp_path):
    p = tmp_path / "huge.txt"
    p.write_bytes(b"a" * (MAX_PROBE_FILE_BYTES + 1))
    _raises_naming(p, "1 MB")


def test_probe_file_of_exactly_the_limit_is_read(tmp_path):
    p = tmp_path / "limit.txt"
    p.write_bytes(b"a" * MAX_PROBE_FILE_BYTES)
    assert len(read_probe_file(p)) == 1


def test_error_message_formats_as_one_line(tmp_path):
    p = tmp_path / "blob.bin"
    p.write_bytes(b"\x00")
    with pytest.raises(InputError) as info:
        read_probe_file(p)
    line = info.value.format_message()
    assert "\n" not in line
    assert str(p) in line


# --- read_probe_file: splitting --------------------------------------------------------------------------


def test_blank_lines_split_probes_and_single_newlines_do_not(tmp_path):
    p = tmp_path / "probes.txt"
    p.write_text("First line\nstill first.\n\nSecond probe.\n\n\n\nThird probe.\n", encoding="utf-8")
    probes = read_probe_file(p)
    assert [pr.text for pr in probes] == ["First line\nstill first.", "Second probe.", "Third probe."]
    assert [pr.name for pr in probes] == ["user_1", "user_2", "user_3"]
    assert {pr.category for pr in probes} == {"user"}


def test_windows_line_endings_and_bom_are_handled(tmp_path):
    p = tmp_path / "win.txt"
    p.write_bytes(b"\xef\xbb\xbfOne.\r\n\r\nTwo.\r\n")
    assert [pr.text for pr in read_probe_file(p)] == ["One.", "Two."]


def test_whitespace_only_line_separates_probes(tmp_path):
    p = tmp_path / "probes.txt"
    p.write_text("First probe.\n   \nSecond probe.\n", encoding="utf-8")
    assert [pr.text for pr in read_probe_file(p)] == ["First probe.", "Second probe."]


# --- is_delimiter_token ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "special", "expected"),
    [
        ("Ġ,", False, True),  # byte-level BPE comma after a space
        (".", False, True),
        ("[SEP]", True, True),  # special token
        ("<s>", True, True),
        ("Ċ", False, True),  # byte-level BPE newline
        ("ĊĊ", False, True),
        ("Ġ", False, True),  # a lone space
        ("▁", False, True),  # SentencePiece space
        ("▁.", False, True),
        ("##,", False, True),  # WordPiece continuation punctuation
        ("hello", False, False),
        ("Ġhello", False, False),
        ("▁world", False, False),
        ("##ing", False, False),
        ("[SEP]", False, False),  # the same text, not flagged special, is not a delimiter
        ("a.", False, False),  # mixed word and punctuation
        ("42", False, False),
    ],
)
def test_is_delimiter_token_examples(token, special, expected):
    assert is_delimiter_token(token, special) is expected


@pytest.mark.parametrize("token", ["ĉ", "č", "<0x0A>"])
def test_byte_level_whitespace_tokens_are_delimiters(token):
    assert is_delimiter_token(token, False) is True


# --- bundled probes -------------------------------------------------------------------------------------


def test_bundled_probes_cover_prose_delimiters_code_and_long():
    probes = bundled_probes()
    cats = {p.category for p in probes}
    assert {"prose", "delimiters", "code", "long"} <= cats
    assert all(p.text and p.text == p.text.strip() for p in probes)
    assert len({p.name for p in probes}) == len(probes)


def test_bundled_set_includes_a_long_passage():
    probes = bundled_probes()
    long = [p for p in probes if p.category == "long"]
    assert len(long) == 1
    assert len(long[0].text.split()) >= 1000  # long enough for a distance tail out to hundreds of tokens
    assert len(long[0].text) > 4 * max(len(p.text) for p in probes if p.category != "long")
