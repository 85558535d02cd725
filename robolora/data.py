"""Records in, token ids and response-only labels out.

The path every run takes: load (JSON list or JSONL) -> validate (every problem as
``file: record N: field: message``) -> split (seeded, stratified by category) -> render the prompt
(the model's chat template, else a plain template) -> tokenize with labels of -100 on the prompt and
padding -> collate. Everything here but :func:`tokenize_records` is pure Python on lists and dicts.

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

from robolora.errors import DataError
from robolora.robot.normalize import normalize_command

IGNORE_INDEX = -100
UNCATEGORIZED = "uncategorized"
#: The system turn of every training and inference prompt. Short on purpose: each of its tokens is
#: computed for every example in every step, and a trained adapter needs no instructions.
SYSTEM_PROMPT = "Write robot API code."
#: The system turn of a base model's few-shot prompt, which has to explain the task.
BASE_SYSTEM_PROMPT = "You are a robot controller. Translate the user's command into robot API code."
PLAIN_TEMPLATE = "### System:\n{system}\n\n### Command:\n{command}\n\n### Code:\n"
FIELDS = ("input", "output", "category")

#: Worked examples for a base model's few-shot prompt (one per category, canonical form).
FEW_SHOT_EXAMPLES = (
    ("move forward 3 meters", "robot.move_forward(distance=3.0, speed=1.0)"),
    ("go to the kitchen slowly", 'robot.navigate_to(location="kitchen", speed=0.5)'),
    ("pick up the red ball", 'robot.gripper.pick_up(object_type="ball", color="red", size="medium")'),
    ("scan the area within 3 meters", "robot.sensors.scan(radius=3.0)"),
    ('say "hello"', 'robot.say(text="hello")'),
    ("turn left then take a photo", "robot.turn_left(angle=90.0)\nrobot.camera.take_photo()"),
    (
        "if you see a cup, pick it up, otherwise say no cup",
        'if robot.sensors.detect(object_type="cup", color="any"):\n'
        '    robot.gripper.pick_up(object_type="cup", color="any", size="medium")\n'
        "else:\n"
        '    robot.say(text="no cup")',
    ),
    (
        "do a square",
        "for _ in range(4):\n    robot.move_forward(distance=1.0, speed=1.0)\n    robot.turn_right(angle=90.0)",
    ),
)


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
    from robolora.fileio import text_problem
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
        not_text: set[str] = set()  # fields holding control characters or lone surrogates
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
        if isinstance(rec.get("category"), str) and len(rec["category"]) > MAX_CATEGORY_CHARS:
            problems.append(f"{where}: field 'category': longer than {MAX_CATEGORY_CHARS} characters; use a short name")
        elif "category" in rec and not isinstance(rec["category"], str):
            problems.append(f"{where}: field 'category': expected a string, got {_kind(rec['category'])}")
        elif "category" in rec and not rec["category"].strip():
            problems.append(f"{where}: field 'category': is empty; give a name or leave the field out")
        elif "category" in rec and (why := text_problem(rec["category"])):
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


# ----------------------------------------------------------------------------- prompts and labels


def prompt_messages(
    command: str, system_prompt: str = SYSTEM_PROMPT, shots: Sequence[tuple[str, str]] = ()
) -> list[dict[str, str]]:
    """The chat turns of a prompt: the system turn, worked (command, program) pairs, then the command.

    Every command appears with its quantities in the API's units, in digits
    (:func:`~robolora.robot.normalize.normalize_command`), in training and inference alike.
    """
    messages = [{"role": "system", "content": system_prompt}]
    for question, answer in shots:
        messages += [
            {"role": "user", "content": normalize_command(question)},
            {"role": "assistant", "content": answer},
        ]
    return [*messages, {"role": "user", "content": normalize_command(command)}]


def render_prompt(tokenizer: Any, command: str, system_prompt: str = SYSTEM_PROMPT) -> tuple[str, bool]:
    """The prompt text up to where the response starts, and whether it already holds special tokens.

    Uses the tokenizer's chat template (:func:`prompt_messages` + generation prompt) when it has one,
    else :data:`PLAIN_TEMPLATE`; either way the command is normalized.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = prompt_messages(command, system_prompt)
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True
    return PLAIN_TEMPLATE.format(system=system_prompt, command=normalize_command(command)), False


def encode_prompt(tokenizer: Any, command: str) -> list[int]:
    """Token ids of the rendered prompt (a BOS token added only where the template does not hold one)."""
    text, templated = render_prompt(tokenizer, command)
    return tokenizer(text, add_special_tokens=not templated)["input_ids"]


def _jinja_string(text: str) -> str:
    """``text`` as a Jinja string literal (JSON's escapes are Jinja's too).

    >>> print(_jinja_string('say "hi"'))
    "say \\"hi\\""
    """
    return json.dumps(text)


def chat_template_with_system(template: str, system_prompt: str = SYSTEM_PROMPT) -> str:
    """``template`` (a chat template, Jinja) with ``system_prompt`` as the system turn of every
    conversation that has none; a conversation with a system turn renders as before.

    So a conversation of the user's command alone renders as :func:`render_prompt` renders it (the
    command aside: the template does not normalize it).

    >>> t = "{% for m in messages %}[{{ m['role'] }}: {{ m['content'] }}]{% endfor %}"
    >>> from jinja2 import Environment
    >>> render = Environment().from_string(chat_template_with_system(t, "Be brief.")).render
    >>> render(messages=[{"role": "user", "content": "stop"}])
    '[system: Be brief.][user: stop]'
    >>> render(messages=[{"role": "system", "content": "Other."}, {"role": "user", "content": "stop"}])
    '[system: Other.][user: stop]'
    """
    system = _jinja_string(system_prompt)
    # A top-level `set` replaces `messages` for the rest of the template; the `{{ '' }}` at the end keeps
    # the block's trimming (trim_blocks) away from a newline that begins the model's template.
    prefix = (
        "{%- if not messages or messages[0]['role'] != 'system' %}"
        f"{{%- set messages = [{{'role': 'system', 'content': {system}}}] + messages %}}"
        "{%- endif %}{{ '' }}"
    )
    return prefix + template


def plain_chat_template(system_prompt: str = SYSTEM_PROMPT, prefix: str = "") -> str:
    """A chat template that renders :data:`PLAIN_TEMPLATE`, for models without one of their own.

    Each user turn renders as a whole plain prompt (its system text: the conversation's system turn,
    else ``system_prompt``), each assistant turn as its text and a blank line (as a few-shot prompt
    shows its examples). ``prefix`` (the text of the special tokens the tokenizer adds, such as a BOS
    token) starts the conversation, so the rendered text, tokenized without special tokens as chat
    servers do, gives the ids of the plain prompt tokenized with them.

    >>> from jinja2 import Environment
    >>> render = Environment().from_string(plain_chat_template("Be brief.")).render
    >>> render(messages=[{"role": "user", "content": "stop"}], add_generation_prompt=True)
    '### System:\\nBe brief.\\n\\n### Command:\\nstop\\n\\n### Code:\\n'
    """
    head, rest = PLAIN_TEMPLATE.split("{system}")
    middle, tail = rest.split("{command}")
    return (
        f"{{%- set ns = namespace(system={_jinja_string(system_prompt)}) %}}{{{{ {_jinja_string(prefix)} }}}}"
        "{%- for message in messages %}"
        "{%- if message['role'] == 'system' %}{%- set ns.system = message['content'] %}"
        f"{{%- elif message['role'] == 'user' %}}{{{{ {_jinja_string(head)} + ns.system + {_jinja_string(middle)}"
        f" + message['content'] + {_jinja_string(tail)} }}}}"
        "{%- else %}{{ message['content'] + '\\n\\n' }}"
        "{%- endif %}"
        "{%- endfor %}"
    )


def _added_prefix(tokenizer: Any) -> str:
    """The text of the special tokens the tokenizer puts before a text it tokenizes (usually BOS, or none)."""
    sample = "### Command:\nstop"
    plain = tokenizer(sample, add_special_tokens=False)["input_ids"]
    full = tokenizer(sample)["input_ids"]
    cut = len(full) - len(plain)
    if cut <= 0 or full[cut:] != plain:
        return ""
    return tokenizer.decode(full[:cut], skip_special_tokens=False)


def export_chat_template(tokenizer: Any, system_prompt: str = SYSTEM_PROMPT) -> str | dict[str, str]:
    """The chat template for a model trained with this tokenizer's prompts, to save with the model.

    Rendered with the user's command alone (``[{"role": "user", "content": command}]`` and the
    generation prompt), it gives what :func:`encode_prompt` gives for the already normalized command:
    the model's own template with ``system_prompt`` as the default system turn
    (:func:`chat_template_with_system`), else :func:`plain_chat_template`.
    """
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: each gets the system turn
        return {name: chat_template_with_system(t, system_prompt) for name, t in template.items()}
    if template:
        return chat_template_with_system(template, system_prompt)
    return plain_chat_template(system_prompt, _added_prefix(tokenizer))


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
_TOKENIZING_CODE = (Path(__file__), Path(__file__).parent / "robot" / "normalize.py")
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
