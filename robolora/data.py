"""Records in, token ids and response-only labels out.

The path every run takes: load (JSON list or JSONL) -> validate (every problem as
``file: record N: field: message``) -> split (seeded, stratified by category) -> render the prompt
(:mod:`robolora.prompts`: the model's chat template, else a plain template) -> tokenize with labels of
-100 on the prompt and padding -> collate. Everything here but :func:`tokenize_records` is pure Python
on lists and dicts.

Example:
    >>> ex = build_example([1, 5, 6, 7], [8, 9], eos_id=2, max_length=6)
    >>> ex["input_ids"], ex["labels"], ex["truncated"]
    ([1, 6, 7, 8, 9, 2], [-100, -100, -100, 8, 9, 2], True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robolora.config import TrainConfig, parse_category_weights
from robolora.errors import DataError, UserError
from robolora.prompts import encode_prompt

IGNORE_INDEX = -100
UNCATEGORIZED = "uncategorized"
FIELDS = ("input", "output", "category")


# ----------------------------------------------------------------------------- loading and validation


#: Longest ``input`` or ``output`` accepted: far beyond any command or program, far below what would
#: stall tokenization or the checker (a field this long is a wrong file or a broken export).
MAX_FIELD_CHARS = 10_000
MAX_CATEGORY_CHARS = 100


def _read_text(path: Path) -> str:
    from robolora.fileio import MAX_DATASET_BYTES, FileReadError, read_text

    try:
        return read_text(path, "a JSON or JSONL dataset", MAX_DATASET_BYTES)
    except FileReadError as e:
        raise DataError([str(e)]) from None


def _is_jsonl(path: Path, text: str) -> bool:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return True
    if path.suffix.lower() == ".json":
        return False
    return not text.lstrip().startswith("[")


def read_records(path: str | Path) -> list[Any]:
    """Parse a JSON list or JSONL file into raw records, without checking their fields.

    Raises:
        DataError: the file is missing, unreadable, not UTF-8, empty, not JSON, or not a list.
    """
    from robolora.fileio import MAX_DEPTH, FileReadError, json_depth, parse_json

    p = Path(path)
    text = _read_text(p)
    if not text.strip():
        raise DataError([f'{p}: file is empty; expected a JSON list of {{"input", "output", "category"}} records'])
    if _is_jsonl(p, text):
        records, problems = [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if json_depth(line) > MAX_DEPTH:
                problems.append(f"{p}: line {lineno}: nests more than {MAX_DEPTH} levels deep; a record is flat")
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                problems.append(f"{p}: line {lineno}: not valid JSON ({e.msg} at column {e.colno})")
        if problems:
            raise DataError(problems)
        return records
    try:
        data = parse_json(text, p, MAX_DEPTH)
    except FileReadError as e:
        raise DataError([str(e)]) from None
    if not isinstance(data, list):
        raise DataError([f"{p}: expected a JSON list of records at the top level, got {_kind(data)}"])
    return data


def _kind(value: Any) -> str:
    """The JSON kind of a value with its article: 'an object', 'a number', ..."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def record_problems(path: str | Path, records: Sequence[Any], check_api: bool = True) -> list[str]:
    """Every problem in a list of raw records, one ``file: record N: field: message`` line each.

    Records are numbered from 0, as in the list. Text fields must be text: no control character but
    tab and newline, no lone surrogate, something visible. ``check_api`` also parses each ``output``
    with the robot API checker.
    """
    from robolora.robot.checker import check  # light: pure Python

    problems: list[str] = []
    if not records:
        return [f'{path}: no records; expected a JSON list of {{"input", "output", "category"}} records']
    seen: dict[str, int] = {}
    for i, rec in enumerate(records):
        where = f"{path}: record {i}"
        if not isinstance(rec, dict):
            problems.append(f'{where}: expected an object with "input" and "output", got {_kind(rec)}')
            continue
        found, not_text = _text_field_problems(where, rec)
        problems += found
        if why := _category_problem(rec):
            problems.append(f"{where}: field 'category': {why}")
        inp, out = rec.get("input"), rec.get("output")
        if isinstance(inp, str) and inp.strip() and "input" not in not_text:
            first = seen.setdefault(_norm(inp), i)
            if first != i:
                problems.append(f"{where}: field 'input': duplicate of record {first}; remove one of them")
        if check_api and isinstance(out, str) and out.strip() and "output" not in not_text:
            result = check(out)
            if not result.api_valid:
                reason = result.errors[0] if result.errors else "invalid"
                problems.append(
                    f"{where}: field 'output': not valid robot API code ({reason}); fix it or pass --no-check-api"
                )
    return problems


def _text_field_problems(where: str, rec: dict[str, Any]) -> tuple[list[str], set[str]]:
    """The problems of a record's ``input`` and ``output``, and which of them hold no text (control
    characters or lone surrogates), which the duplicate and API checks then skip."""
    from robolora.fileio import text_problem

    problems: list[str] = []
    not_text: set[str] = set()
    for key in ("input", "output"):
        value = rec.get(key)
        if key not in rec:
            problems.append(f"{where}: field '{key}': missing; every record needs a non-empty string '{key}'")
        elif not isinstance(value, str):
            problems.append(f"{where}: field '{key}': expected a string, got {_kind(value)}")
        elif not value.strip():
            problems.append(f"{where}: field '{key}': is empty; every record needs a non-empty string '{key}'")
        elif len(value) > MAX_FIELD_CHARS:
            problems.append(
                f"{where}: field '{key}': {len(value):,} characters, over the limit of {MAX_FIELD_CHARS:,}; "
                "a robot command and its program are a few lines"
            )
        elif why := text_problem(value):
            problems.append(f"{where}: field '{key}': {why}")
            not_text.add(key)
    return problems, not_text


def _category_problem(rec: dict[str, Any]) -> str | None:
    """What is wrong with a record's optional ``category``, or None."""
    from robolora.fileio import text_problem

    if "category" not in rec:
        return None
    category = rec["category"]
    if isinstance(category, str) and len(category) > MAX_CATEGORY_CHARS:
        return f"longer than {MAX_CATEGORY_CHARS} characters; use a short name"
    if not isinstance(category, str):
        return f"expected a string, got {_kind(category)}"
    if not category.strip():
        return "is empty; give a name or leave the field out"
    return text_problem(category) or None


def load_records(path: str | Path, check_api: bool = True) -> list[dict[str, str]]:
    """Read and validate a dataset file; return records with ``category`` filled in.

    Raises:
        DataError: with every problem found, each naming the file, record and field.
    """
    records = read_records(path)
    problems = record_problems(path, records, check_api=check_api)
    if problems:
        raise DataError(problems)
    return [
        {"input": r["input"], "output": r["output"], "category": r.get("category") or UNCATEGORIZED} for r in records
    ]


def split_records(
    records: Sequence[dict[str, str]], val_ratio: float, seed: int
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Seeded split stratified by category: each category gives ``round(n * val_ratio)`` records to
    validation (at least one where it has two or more), the rest to training, in file order.

    >>> recs = [{"input": str(i), "output": "o", "category": "ab"[i % 2]} for i in range(10)]
    >>> train, val = split_records(recs, 0.2, seed=0)
    >>> len(train), len(val), sorted(r["category"] for r in val)
    (8, 2, ['a', 'b'])
    """
    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        by_cat[rec.get("category") or UNCATEGORIZED].append(i)
    rng = random.Random(seed)
    val_idx: set[int] = set()
    for cat in sorted(by_cat):
        idx = by_cat[cat]
        n_val = round(len(idx) * val_ratio)
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val_idx.update(rng.sample(idx, n_val))
    train = [r for i, r in enumerate(records) if i not in val_idx]
    val = [r for i, r in enumerate(records) if i in val_idx]
    return train, val


def weight_by_category(records: Sequence[dict[str, str]], weights: dict[str, float], seed: int) -> list[dict[str, str]]:
    """Training records with each category seen ``weight`` times as often: every record ``floor(weight)``
    times, and a seeded ``weight - floor(weight)`` share of them once more (in file order; the sampler
    shuffles). Categories not named keep weight 1.

    >>> recs = [{"input": str(i), "output": "o", "category": "ab"[i % 2]} for i in range(8)]
    >>> weighted = weight_by_category(recs, {"a": 2, "b": 0.5}, seed=0)
    >>> sorted(Counter(r["category"] for r in weighted).items())
    [('a', 8), ('b', 2)]
    """
    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        by_cat[rec.get("category") or UNCATEGORIZED].append(i)
    rng = random.Random(seed)
    copies = [0] * len(records)
    for cat in sorted(by_cat):
        indices, weight = by_cat[cat], weights.get(cat, 1.0)
        for i in indices:
            copies[i] += int(weight)
        for i in rng.sample(indices, round((weight - int(weight)) * len(indices))):
            copies[i] += 1
    return [rec for rec, n in zip(records, copies, strict=True) for _ in range(n)]


def dataset_stats(records: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Counts per category and character lengths of inputs and outputs."""
    cats = Counter(r.get("category") or UNCATEGORIZED for r in records)
    return {
        "records": len(records),
        "categories": dict(sorted(cats.items())),
        "input_chars": lengths_of(len(r["input"]) for r in records),
        "output_chars": lengths_of(len(r["output"]) for r in records),
        "output_lines": lengths_of(r["output"].count("\n") + 1 for r in records),
    }


def lengths_of(values: Any) -> dict[str, float]:
    """min / mean / max of an iterable of numbers."""
    v = sorted(values)
    return {"min": v[0], "mean": round(sum(v) / len(v), 1), "max": v[-1]} if v else {}


# ----------------------------------------------------------------------------- examples and labels


def build_example(prompt_ids: list[int], response_ids: list[int], eos_id: int, max_length: int) -> dict[str, Any]:
    """One training example: prompt + response + EOS, labels -100 on the prompt.

    When too long, the prompt loses tokens from its left (after its first token, which is kept as it
    is usually BOS or the template's start), so the response and the end of the prompt survive.
    Raises ValueError when the response alone (with EOS and one prompt token) does not fit.
    """
    response = [*response_ids, eos_id]
    budget = max_length - len(response)
    if budget < 2:
        raise ValueError(f"response of {len(response)} tokens does not fit in max_length={max_length}")
    truncated = len(prompt_ids) > budget
    if truncated:
        prompt_ids = prompt_ids[:1] + prompt_ids[len(prompt_ids) - (budget - 1) :]
    return {
        "input_ids": prompt_ids + response,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + response,
        "truncated": truncated,
    }


def target_count(labels: Sequence[int]) -> int:
    """Tokens the loss is taken over: labels other than -100, after the shift by one position.

    >>> target_count([-100, -100, 8, 9, 2])
    3
    """
    return sum(t != IGNORE_INDEX for t in labels[1:])


def pack_examples(examples: Sequence[dict[str, Any]], max_length: int) -> list[dict[str, list[int]]]:
    """Examples packed into rows of at most ``max_length`` tokens (``--packing``), best fit decreasing.

    The longest examples are placed first, each into the row with the least room that still holds it
    (else a new row), so rows come out nearly full. A row concatenates its examples' ``input_ids`` and
    ``labels``; its ``position_ids`` restart at 0 at every example. Given those positions and no
    attention mask, the model builds a block-diagonal causal mask (transformers' packed-sequence
    masking): each example attends only to itself, at the rotary positions it would have alone, and so
    trains as it would unpacked. Each example's first label is -100, so no loss crosses a boundary.

    >>> a = {"input_ids": [1, 5, 6], "labels": [-100, 6, 2]}
    >>> b = {"input_ids": [1, 7], "labels": [-100, 2]}
    >>> c = {"input_ids": [1, 8, 9, 4], "labels": [-100, -100, 9, 2]}
    >>> [row["input_ids"] for row in pack_examples([a, b, c], max_length=6)]
    [[1, 8, 9, 4, 1, 7], [1, 5, 6]]
    >>> pack_examples([a, b, c], max_length=6)[0]["position_ids"]
    [0, 1, 2, 3, 0, 1]
    """
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]["input_ids"]), i))
    rows: list[dict[str, list[int]]] = []
    # room[r]: the rows (indices into ``rows``) with exactly r tokens free, newest last
    room: list[list[int]] = [[] for _ in range(max_length + 1)]
    for i in order:
        ids, labels = examples[i]["input_ids"], examples[i]["labels"]
        n = len(ids)
        if not 0 < n <= max_length:
            raise ValueError(f"example {i} has {n} tokens; packing takes 1 to max_length={max_length}")
        free = next((r for r in range(n, max_length + 1) if room[r]), None)
        if free is None:
            rows.append({"input_ids": [], "labels": [], "position_ids": []})
            row, free = len(rows) - 1, max_length
        else:
            row = room[free].pop()
        rows[row]["input_ids"] += ids
        rows[row]["labels"] += [IGNORE_INDEX, *labels[1:]]
        rows[row]["position_ids"] += range(n)
        room[free - n].append(row)
    return rows


@dataclass
class TokenizeReport:
    """How many examples were tokenized, had their prompt truncated, or were dropped as too long."""

    examples: int = 0
    truncated: int = 0
    dropped: int = 0
    max_tokens: int = 0

    def describe(self, name: str, max_length: int) -> str:
        text = f"{name}: {self.examples} examples, longest {self.max_tokens} tokens (max_length {max_length})"
        if self.truncated:
            text += f"; {self.truncated} prompts truncated on the left"
        if self.dropped:
            text += f"; {self.dropped} records dropped: their response alone exceeds max_length"
        return text


def tokenize_records(records: Sequence[dict[str, str]], tokenizer: Any, max_length: int) -> tuple[Any, TokenizeReport]:
    """Tokenize records into a ``datasets.Dataset`` of ``input_ids``, ``labels`` and ``length``.

    Returns the dataset and a :class:`TokenizeReport`.
    """
    rows, report = _tokenized_rows(records, tokenizer, max_length)
    return _dataset(rows), report


def _tokenized_rows(
    records: Sequence[dict[str, str]], tokenizer: Any, max_length: int
) -> tuple[dict[str, list], TokenizeReport]:
    """The columns of :func:`tokenize_records`' dataset as lists, and its report."""
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token")
    report = TokenizeReport()
    rows: dict[str, list] = {"input_ids": [], "labels": [], "length": [], "category": []}
    for rec in records:
        prompt_ids = encode_prompt(tokenizer, rec["input"])
        response_ids = tokenizer(rec["output"], add_special_tokens=False)["input_ids"]
        try:
            ex = build_example(prompt_ids, response_ids, eos_id, max_length)
        except ValueError:
            report.dropped += 1
            continue
        report.examples += 1
        report.truncated += ex["truncated"]
        report.max_tokens = max(report.max_tokens, len(ex["input_ids"]))
        rows["input_ids"].append(ex["input_ids"])
        rows["labels"].append(ex["labels"])
        rows["length"].append(len(ex["input_ids"]))
        rows["category"].append(rec.get("category") or UNCATEGORIZED)
    return rows, report


def _dataset(rows: dict[str, list]) -> Any:
    import datasets
    from datasets.table import InMemoryTable

    # An explicit fingerprint spares datasets from hashing the table with dill, which is slow and,
    # inside Ray workers, prints the bytecode it disassembles.
    digest = hashlib.sha256(json.dumps([rows["input_ids"], rows["labels"]]).encode()).hexdigest()[:32]
    return datasets.Dataset(InMemoryTable.from_pydict(rows), fingerprint=digest)


#: Files whose code decides how records become tokens: a change to any of them changes every cache key.
_TOKENIZING_CODE = (
    Path(__file__),
    Path(__file__).parent / "prompts.py",
    Path(__file__).parent / "robot" / "normalize.py",
)
#: Tokenizer files that decide its output (whichever the folder has).
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
#: Tokenized datasets kept in the cache folder; the oldest go first.
TOKENIZED_CACHE_KEEP = 64


def tokenized_key(records: Sequence[dict[str, str]], tokenizer: Any, max_length: int) -> str | None:
    """A digest of everything the tokenized examples depend on: the records' text, the tokenizer's files,
    max_length, the tokenizing code and the library versions. None when the tokenizer has no local
    folder to fingerprint (nothing is cached then)."""
    from importlib.metadata import version

    folder = Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for name in _TOKENIZER_FILES:
        if (folder / name).is_file():
            h.update(name.encode() + b"\0" + (folder / name).read_bytes())
    for path in _TOKENIZING_CODE:
        h.update(path.read_bytes())
    texts = [[r["input"], r["output"], r.get("category") or UNCATEGORIZED] for r in records]
    meta = [type(tokenizer).__name__, max_length, version("transformers"), version("tokenizers")]
    h.update(json.dumps([meta, texts], ensure_ascii=False).encode())
    return h.hexdigest()[:40]


def tokenize_cached(
    records: Sequence[dict[str, str]], tokenizer: Any, max_length: int, cache: Path | None
) -> tuple[Any, TokenizeReport]:
    """:func:`tokenize_records`, kept in ``cache`` (a folder) so the next run with the same records,
    tokenizer and settings reads the examples instead of tokenizing them again. A cache that cannot
    be read or written is ignored."""
    key = tokenized_key(records, tokenizer, max_length) if cache is not None else None
    path = cache / f"{key}.json" if cache is not None and key else None
    if path is not None:
        try:
            data = json.loads(path.read_text())
            return _dataset(data["rows"]), TokenizeReport(**data["report"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    rows, report = _tokenized_rows(records, tokenizer, max_length)
    if path is not None:
        _store(path, {"rows": rows, "report": dataclasses.asdict(report)})
    return _dataset(rows), report


def _store(path: Path, value: Any) -> None:
    """Write ``value`` as JSON atomically (another worker may write the same file), then keep only the
    newest :data:`TOKENIZED_CACHE_KEEP` files of the folder."""
    from robolora.fileio import atomic_write_text

    with contextlib.suppress(OSError):
        atomic_write_text(path, json.dumps(value, separators=(",", ":")))
        ages = {}
        for f in path.parent.glob("*.json"):
            with contextlib.suppress(OSError):
                ages[f] = f.stat().st_mtime
        for old in sorted(ages, key=ages.get, reverse=True)[TOKENIZED_CACHE_KEEP:]:
            with contextlib.suppress(OSError):
                old.unlink()


def collate(examples: Sequence[dict[str, Any]], pad_id: int, pad_to_multiple_of: int = 1) -> dict[str, list[list[int]]]:
    """Right-pad a batch to its longest example: ``input_ids`` with ``pad_id``, ``labels`` with -100,
    ``attention_mask`` 1 on real tokens (and packed rows' ``position_ids`` counting on from 0). Returns
    lists; the worker turns them into tensors.

    >>> examples = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [1, 4], "labels": [-100, 4]}]
    >>> batch = collate(examples, pad_id=0)
    >>> batch["input_ids"], batch["labels"], batch["attention_mask"]
    ([[1, 2, 3], [1, 4, 0]], [[-100, 2, 3], [-100, 4, -100]], [[1, 1, 1], [1, 1, 0]])
    """
    width = max(len(e["input_ids"]) for e in examples)
    width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "attention_mask": []}
    packed = "position_ids" in examples[0]
    if packed:
        batch["position_ids"] = []
    for e in examples:
        pad = width - len(e["input_ids"])
        batch["input_ids"].append(list(e["input_ids"]) + [pad_id] * pad)
        batch["labels"].append(list(e["labels"]) + [IGNORE_INDEX] * pad)
        batch["attention_mask"].append([1] * len(e["input_ids"]) + [0] * pad)
        if packed:  # the padding continues as one more sequence, which no real token attends to
            batch["position_ids"].append(list(e["position_ids"]) + list(range(pad)))
    return batch


# ----------------------------------------------------------------------------- a run's datasets


def load_datasets(cfg: TrainConfig) -> tuple[list[dict[str, str]], list[dict[str, str]], str]:
    """Validated train and validation records (split off when only one file is given), the training
    records weighted by category where ``--category-weights`` asks."""
    train, val, how = _read_datasets(cfg)
    weights = parse_category_weights(cfg.category_weights)
    if not weights:
        return train, val, how
    present = sorted({r.get("category") or UNCATEGORIZED for r in train})
    for name in weights:
        if name not in present:
            raise UserError(
                f"--category-weights: no training record has the category {name!r}; "
                f"the training records have: {', '.join(present)}"
            )
    weighted = weight_by_category(train, weights, cfg.seed)
    said = ", ".join(f"{name} x{w:g}" for name, w in weights.items())
    return weighted, val, f"{how}; {len(weighted)} training examples per epoch with {said}"


def _read_datasets(cfg: TrainConfig) -> tuple[list[dict[str, str]], list[dict[str, str]], str]:
    if cfg.data_json:
        records = load_records(cfg.data_json, check_api=cfg.check_api)
        train, val = split_records(records, cfg.val_ratio, cfg.seed)
        how = f"{cfg.data_json}: {len(records)} records, split {len(train)} train / {len(val)} validation"
        return train, val, how + f" (stratified by category, seed {cfg.seed})"
    if cfg.train_json:
        train = load_records(cfg.train_json, check_api=cfg.check_api)
        if cfg.val_json:
            val = load_records(cfg.val_json, check_api=cfg.check_api)
            return train, val, f"{cfg.train_json}: {len(train)} train; {cfg.val_json}: {len(val)} validation"
        train, val = split_records(train, cfg.val_ratio, cfg.seed)
        return train, val, f"{cfg.train_json}: split {len(train)} train / {len(val)} validation"
    raise UserError("no dataset: pass --data-json FILE, or --train-json FILE [--val-json FILE]")
