"""Atomic writes (a reader or a crash sees the old file or the new one, never part of one) and bounded,
checked reads (no hang, no recursion blow-up, no alias bomb; one clear error)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from robolora import fileio
from robolora.errors import UserError
from robolora.fileio import (
    FileReadError,
    atomic_write_bytes,
    atomic_write_text,
    check_new_file,
    json_depth,
    load_json,
    load_yaml,
    read_bytes,
    read_text,
    shown,
    text_problem,
)


def test_replaces_the_file_and_leaves_no_temporary_behind(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_a_write_that_fails_midway_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "complete: true\n")

    class Full:
        def __init__(self, real):
            self.real = real

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.real.close()

        def write(self, data):
            self.real.write(data[:3])  # part of it, then the disk is full
            raise OSError(28, "No space left on device")

    real_open = open
    monkeypatch.setattr(fileio, "open", lambda p, mode: Full(real_open(p, mode)), raising=False)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(path, b"complete: false, and much longer\n")
    assert path.read_text() == "complete: true\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


# ----------------------------------------------------------------------------- bounded, checked reads


def test_read_text_reads_a_regular_file_and_drops_a_byte_order_mark(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_bytes(b"\xef\xbb\xbflora_r: 8\n")
    assert read_text(path) == "lora_r: 8\n"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: d, "is a directory"),
        (lambda d: (os.mkfifo(d / "fifo"), d / "fifo")[1], "named pipe"),
        (lambda d: Path("/dev/zero"), "character device"),
        (lambda d: ((d / "link").symlink_to("/dev/zero"), d / "link")[1], "character device"),
        (lambda d: d / "missing.json", "no such file"),
        (lambda d: d / "a-file" / "x.json" if (d / "a-file").write_text("x") else None, "no such file"),
        (lambda d: d / ("n" * 300), "too long"),
        (lambda d: d / "a\0b", "NUL byte"),
    ],
    ids=["directory", "fifo", "dev-zero", "link-to-dev-zero", "missing", "under-a-file", "long-name", "nul"],
)
def test_read_bytes_refuses_what_is_not_a_regular_file_without_blocking(tmp_path, make, says):
    path = make(tmp_path)
    with pytest.raises(FileReadError, match=says) as err:
        read_bytes(path, "a dataset")
    assert "Traceback" not in str(err.value) and len(str(err.value)) < 400


def test_read_bytes_refuses_a_file_over_the_limit_before_reading_it(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as fh:
        fh.truncate(10 << 30)  # sparse: 10 GiB that a full read would try to hold
    with pytest.raises(FileReadError, match="over the limit of 1,024 bytes"):
        read_bytes(path, "a config", max_bytes=1024)


def test_read_text_names_the_first_byte_that_is_not_utf8(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(FileReadError, match=r"a\.json: byte 7: not valid UTF-8"):
        read_text(path)


@pytest.mark.parametrize(
    ("text", "depth"),
    [("[]", 1), ('{"a": {"b": [1]}}', 3), ('["[[[[", "\\"]]"]', 1), ("[" * 10_000, 10_000), ('"{"', 0)],
)
def test_json_depth_skips_strings(text, depth):
    assert json_depth(text) == depth


@pytest.mark.parametrize("depth", [65, 1_000, 100_000])
def test_load_json_refuses_deep_nesting_without_recursing(tmp_path, depth):
    path = tmp_path / "deep.json"
    path.write_text("[" * depth + "]" * depth)
    with pytest.raises(FileReadError, match="more than 64 levels deep"):
        load_json(path)
    path.write_text("[" * 64 + "]" * 64)
    assert load_json(path) is not None


def test_load_json_says_where_the_json_breaks(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"a": 1,}')
    with pytest.raises(FileReadError, match=r"not valid JSON \(.* at line 1 column 9\)"):
        load_json(path)


@pytest.mark.parametrize(
    "text",
    ["a: " + "[" * 5_000 + "]" * 5_000, "a:\n  " + "- " * 5_000 + "x", "a: " + "{b: " * 5_000 + "1" + "}" * 5_000],
)
def test_load_yaml_refuses_deep_nesting(tmp_path, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(FileReadError, match="more than 64 levels deep"):
        load_yaml(path)


def billion_laughs(levels: int = 9, fan: int = 9) -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * fan) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nlora_r: *l{levels - 1}\n"


def test_load_yaml_refuses_an_alias_bomb_before_building_it(tmp_path):
    path = tmp_path / "lol.yaml"
    path.write_text(billion_laughs())
    start = time.monotonic()
    with pytest.raises(FileReadError, match=r"aliases \(\*name\) expand to more than 10,000,000"):
        load_yaml(path)
    assert time.monotonic() - start < 2


def test_load_yaml_counts_an_alias_of_a_deep_value_as_deep(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("a: &x " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*x" + "]" * 30 + "\n")
    with pytest.raises(FileReadError, match="more than 64 levels deep"):
        load_yaml(path)


@pytest.mark.parametrize("text", ["a: &x [1, *x]", "a: &x {b: [{c: *x}]}"])
def test_load_yaml_refuses_an_alias_inside_its_own_value(tmp_path, text):
    path = tmp_path / "loop.yaml"
    path.write_text(text)
    with pytest.raises(FileReadError, match=r"alias \*x sits inside the value it names"):
        load_yaml(path)


def test_load_yaml_keeps_ordinary_aliases_and_merge_keys(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("shared: &s {lora_r: 8}\na: *s\nb:\n  <<: *s\n  lora_alpha: 16\n")
    assert load_yaml(path) == {"shared": {"lora_r": 8}, "a": {"lora_r": 8}, "b": {"lora_r": 8, "lora_alpha": 16}}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("\x00", "control character U+0000"),
        ("go\x1b[2J", "control character U+001B"),
        ("\x85", "control character U+0085"),
        ("\ud800", "lone surrogate (U+D800)"),
        ("stop \udfff", "lone surrogate (U+DFFF) at character 5"),
        ("\u200b\ufeff", "no visible characters"),
    ],
)
def test_text_problem_finds_text_that_is_not_text(value, says):
    assert says in text_problem(value)


@pytest.mark.parametrize("value", ["move forward 3 m", 'say "hi"\n\tok', "🤖", "déjà vu", "a\r\nb"])
def test_text_problem_passes_real_text(value):
    assert text_problem(value) is None


def test_shown_never_formats_a_huge_value_whole():
    assert len(shown("x" * 10_000_000)) < 150
    assert shown(list(range(10**6))) == "a list of 1,000,000 items"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: d, "is a directory"),
        (lambda d: ((d / "f").write_text("x"), d / "f" / "out.json")[1], "is a file"),
        (lambda d: d / ("n" * 300 + ".json"), "too long"),
        (lambda d: d / "a\0b.json", "NUL byte"),
        (lambda d: Path("/proc/robolora-unit/out.json"), "cannot be written"),
    ],
    ids=["directory", "under-a-file", "long-name", "nul", "proc"],
)
def test_check_new_file_refuses_paths_a_file_cannot_be_written_to(tmp_path, make, says):
    path = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UserError, match=says):
        check_new_file(path, "--json-out")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_check_new_file_accepts_a_new_file_in_new_folders_and_leaves_nothing(tmp_path):
    assert check_new_file(tmp_path / "a" / "b.json", "--json-out") == tmp_path / "a" / "b.json"
    assert list(tmp_path.iterdir()) == []
