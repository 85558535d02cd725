"""Judge generated robot code against references: syntax, api-valid, exact and semantic, per category.

The judges are those of ``shared/robot_api.md`` ("How outputs are judged"): the checker parses a
prediction with :func:`ast.parse` and walks the tree, the simulator interprets that tree; nothing
here ever runs generated code (no ``exec``/``eval``), and nothing imports torch.

The pipeline: raw generations -> :func:`extract_code` -> :func:`score` -> :meth:`Report.table`,
:func:`compare` for several models, :func:`write_predictions` for the per-record details.

Example:
    >>> records = [
    ...     {"input": "go 3 m", "output": "robot.move_forward(distance=3.0, speed=1.0)", "category": "movement"},
    ...     {"input": "stop", "output": "robot.stop()", "category": "movement"},
    ...     {"input": "go home", "output": "robot.go_home()", "category": "navigation"},
    ... ]
    >>> generations = ["```python\\nrobot.move_forward(distance=3)\\n```", "robot.stop()<|im_end|>", "robot.fly()"]
    >>> report = score(records, [extract_code(g) for g in generations])
    >>> print(report.table())
    category    n  syntax  api-valid  exact  semantic
    ----------  -  ------  ---------  -----  --------
    movement    2   100.0      100.0   50.0     100.0
    navigation  1   100.0        0.0    0.0       0.0
    overall     3   100.0       66.7   33.3      66.7
    >>> report.judgements[2].errors
    ['line 1: unknown call robot.fly']
"""

from __future__ import annotations

import json
import keyword
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robolora.data import UNCATEGORIZED
from robolora.errors import ConfigError, UserError
from robolora.fileio import atomic_write_text
from robolora.robot.checker import check
from robolora.robot.simulator import exact_match, semantic_equal

#: The metrics in table order; semantic implies api_valid implies syntax, and exact implies semantic.
METRICS = ("syntax", "api_valid", "exact", "semantic")
LABELS = {"syntax": "syntax", "api_valid": "api-valid", "exact": "exact", "semantic": "semantic"}
OVERALL = "overall"


@dataclass(frozen=True)
class EvalSettings:
    """How generated code is judged: the one place for the defaults of ``robolora eval``, ``robolora demo``,
    a sweep's ``evaluate:`` and :meth:`robolora.infer.Generator.generate`. Constrained decoding is on: the
    model can emit only code the robot API accepts (``--no-constrained`` judges its raw output)."""

    constrained: bool = True
    #: Evaluate only the first N records (0: every record).
    limit: int = 0
    #: Commands generated together.
    batch_size: int = 32
    #: The longest program, in tokens.
    max_new_tokens: int = 128
    #: The base model's weights quantized on loading ("4bit", "8bit"), for models too big for the GPUs.
    quantization: str | None = None
    #: Caps that spread the weights over the visible GPUs (robolora.placement), e.g. "0:20GiB,1:20GiB".
    max_memory: str | None = None
    #: What constrains decoding (robolora.robot.engines.ENGINES): "llguidance", "xgrammar" or "recognizer". All
    #: three give the same greedy programs; llguidance masked fastest in benchmarks/grammar.py (2 CPU cores,
    #: bundled model, batch 32: 0.21 ms of masking per generated token, xgrammar 0.26, the recognizer 0.31;
    #: 25.4-25.9 ms per token in all, the model's share the same for each) and installs no other package.
    grammar_engine: str = "llguidance"
    #: Beams that decode again a greedy program that does not fit its command (robolora.robot.coverage: it
    #: leaves out a number, quoted text, colour, place, action or condition the command names, makes one up, or
    #: scopes a counted loop against the command's words); the best
    #: beam that fits replaces it (0: off).
    repair_beams: int = 8


#: The defaults, as one value.
EVAL_DEFAULTS = EvalSettings()


def _percent(rate: float) -> str:
    return f"{100 * rate:.1f}"


def _render(header: list[str], rows: list[list[str]]) -> str:
    """Columns two spaces apart under a dashed rule: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first, *rest = zip(cells, widths, strict=True)
        return "  ".join([first[0].ljust(first[1]), *(cell.rjust(width) for cell, width in rest)]).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)])


# ----------------------------------------------------------------------------- judging one prediction


@dataclass
class Judgement:
    """The verdict on one prediction; ``errors`` holds the checker's reasons when it is not api-valid.

    Always ``semantic => api_valid => syntax`` and ``exact => semantic``.
    """

    syntax: bool
    api_valid: bool
    exact: bool
    semantic: bool
    errors: list[str] = field(default_factory=list)


def judge(prediction: str, reference: str) -> Judgement:
    """Judge a prediction against its reference; never raises and never executes either.

    An invalid reference can be matched by nothing: ``semantic`` (and so ``exact``) is False.
    """
    if not isinstance(prediction, str):
        return Judgement(False, False, False, False, [f"prediction is {type(prediction).__name__}, not a string"])
    result = check(prediction)
    semantic = result.api_valid and isinstance(reference, str) and semantic_equal(result.program, reference)
    # Requiring semantic keeps exact => semantic even where whitespace normalisation would equate two
    # texts that differ inside a multi-line string literal.
    exact = semantic and exact_match(prediction, reference)
    return Judgement(result.syntax_ok, result.api_valid, exact, semantic, list(result.errors))


# ----------------------------------------------------------------------------- aggregating


@dataclass
class Scores:
    """How many of ``n`` predictions passed each metric; ``*_rate`` are the fractions (0.0 when n is 0)."""

    n: int = 0
    syntax: int = 0
    api_valid: int = 0
    exact: int = 0
    semantic: int = 0

    def add(self, judgement: Judgement) -> None:
        """Count one more prediction."""
        self.n += 1
        for metric in METRICS:
            setattr(self, metric, getattr(self, metric) + getattr(judgement, metric))

    def rate(self, metric: str) -> float:
        """The fraction of predictions passing ``metric`` (one of :data:`METRICS`)."""
        return getattr(self, metric) / self.n if self.n else 0.0

    @property
    def syntax_rate(self) -> float:
        return self.rate("syntax")

    @property
    def api_valid_rate(self) -> float:
        return self.rate("api_valid")

    @property
    def exact_rate(self) -> float:
        return self.rate("exact")

    @property
    def semantic_rate(self) -> float:
        return self.rate("semantic")

    def to_dict(self) -> dict[str, int | float]:
        """``{"n", "syntax", ..., "syntax_rate", ...}``: counts, then rates rounded to 4 places."""
        counts = {"n": self.n, **{metric: getattr(self, metric) for metric in METRICS}}
        return counts | {f"{metric}_rate": round(self.rate(metric), 4) for metric in METRICS}


@dataclass
class Report:
    """Scores over all records and per category (sorted by name), and each record's judgement in order."""

    overall: Scores
    per_category: dict[str, Scores]
    judgements: list[Judgement]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"overall": {...}, "per_category": {name: {...}}}`` (see :meth:`Scores.to_dict`)."""
        return {
            "overall": self.overall.to_dict(),
            "per_category": {name: scores.to_dict() for name, scores in self.per_category.items()},
        }

    def table(self) -> str:
        """An aligned plain-text table: one row per category then ``overall``; percentages, one decimal."""
        rows = [*self.per_category.items(), (OVERALL, self.overall)]
        body = [[name, str(s.n), *(_percent(s.rate(metric)) for metric in METRICS)] for name, s in rows]
        return _render(["category", "n", *(LABELS[metric] for metric in METRICS)], body)


def category_of(record: dict[str, Any]) -> str:
    """A record's category, :data:`~robolora.data.UNCATEGORIZED` where it has none."""
    return record.get("category") or UNCATEGORIZED


def score(records: Sequence[dict[str, Any]], predictions: Sequence[str]) -> Report:
    """Judge each prediction against its record's ``output`` and aggregate.

    Raises:
        ValueError: the two lists differ in length.
    """
    _same_length(records, predictions)
    judgements = [judge(pred, rec["output"]) for rec, pred in zip(records, predictions, strict=True)]
    overall = Scores()
    per_category: dict[str, Scores] = {}
    for rec, judgement in zip(records, judgements, strict=True):
        overall.add(judgement)
        per_category.setdefault(category_of(rec), Scores()).add(judgement)
    return Report(overall, dict(sorted(per_category.items())), judgements)


# ----------------------------------------------------------------------------- side by side


def compare(reports: dict[str, Report]) -> str:
    """One table for several models: a row per category then ``overall``, a column per model.

    Each cell is ``semantic% / api-valid%``; ``-`` where a model has no record of that category.
    ``n`` shows each model's count, joined by ``/`` where they differ (the models saw different data).

    Raises:
        ValueError: no reports.

    >>> records = [{"input": "stop", "output": "robot.stop()"}]
    >>> print(compare({"base": score(records, ["stop"]), "adapter": score(records, ["robot.stop()"])}))
    cells: semantic % / api-valid %
    category       n       base        adapter
    -------------  -  ---------  -------------
    uncategorized  1  0.0 / 0.0  100.0 / 100.0
    overall        1  0.0 / 0.0  100.0 / 100.0
    """
    if not reports:
        raise ValueError("no reports to compare")
    body = []
    for name, row in _rows(reports).items():
        counts = [str(s.n) for s in row.values() if s is not None]
        cells = [
            "-" if s is None else f"{_percent(s.semantic_rate)} / {_percent(s.api_valid_rate)}" for s in row.values()
        ]
        body.append([name, counts[0] if len(set(counts)) == 1 else "/".join(counts), *cells])
    return "cells: semantic % / api-valid %\n" + _render(["category", "n", *reports], body)


def compare_dict(reports: dict[str, Report]) -> dict[str, Any]:
    """:func:`compare` as JSON: ``{"models", "overall": {model: scores}, "per_category": {name: {model: scores}}}``.

    Scores are :meth:`Scores.to_dict`; a model without records of a category is left out of its entry.
    """
    rows = {
        name: {model: scores.to_dict() for model, scores in row.items() if scores is not None}
        for name, row in _rows(reports).items()
    }
    return {"models": list(reports), "overall": rows.pop(OVERALL), "per_category": rows}


def _rows(reports: dict[str, Report]) -> dict[str, dict[str, Scores | None]]:
    """``{row name: {model: scores or None}}`` for every category any model has (sorted), then overall."""
    names = sorted({name for report in reports.values() for name in report.per_category})
    rows = {name: {model: r.per_category.get(name) for model, r in reports.items()} for name in names}
    return rows | {OVERALL: {model: r.overall for model, r in reports.items()}}


# ----------------------------------------------------------------------------- files


def write_predictions(
    path: str | os.PathLike[str],
    records: Sequence[dict[str, Any]],
    predictions: Sequence[str],
    judgements: Sequence[Judgement] | None = None,
    logprobs: Sequence[float] | None = None,
) -> Path:
    """Write one JSON line per record, atomically: ``input``, ``prediction``, ``reference``, ``category``.

    With judgements, each line also holds ``syntax``, ``api_valid``, ``exact``, ``semantic`` and
    ``errors``; with logprobs, the prediction's ``mean_logprob`` (what an ensemble vote weighs).

    Raises:
        ValueError: the lists differ in length.
    """
    _same_length(records, predictions)
    for what, other in (("judgements", judgements), ("logprobs", logprobs)):
        if other is not None:
            _same_length(records, other, what)
    lines = []
    for i, (rec, pred) in enumerate(zip(records, predictions, strict=True)):
        row: dict[str, Any] = {
            "input": rec["input"],
            "prediction": pred,
            "reference": rec["output"],
            "category": category_of(rec),
        }
        if judgements is not None:
            j = judgements[i]
            row |= {metric: getattr(j, metric) for metric in METRICS} | {"errors": j.errors}
        if logprobs is not None:
            row["mean_logprob"] = logprobs[i]
        # ASCII escapes: a generation may hold lone surrogates, which UTF-8 cannot encode.
        lines.append(json.dumps(row) + "\n")
    return atomic_write_text(path, "".join(lines))


def _same_length(records: Sequence[Any], other: Sequence[Any], what: str = "predictions") -> None:
    if len(records) != len(other):
        raise ValueError(f"{len(records)} records but {len(other)} {what}; expected one per record")


# ----------------------------------------------------------------------------- extracting code

#: Special tokens of chat templates; a generation is cut at the first one, wherever it is.
CHAT_TOKEN = re.compile(r"<\|[^<>\n]*?\|>|<｜[^<>\n]*?｜>|</s>|<(?:start|end)_of_turn>|\[/?INST\]")
#: Lines (after their indentation, case-insensitive) that end the program: fences, markdown headings
#: such as the plain template's ``### Command:``, and the labels of explanations and chat turns.
STOP_PREFIXES = (
    "```",
    "###",
    "explanation",
    "note:",
    "command:",
    "input:",
    "output:",
    "system:",
    "user:",
    "assistant:",
    "human:",
)
#: Prose: a word, maybe one punctuation mark, whitespace, then a letter ("This code", "Sure! Here"), or a
#: lone word ending the line with "!", "." or ":" ("Sure!", "Done.").
_PROSE = re.compile(r"([A-Za-z][A-Za-z']*)(?:[!,.:;]?\s+[A-Za-z]|[!.:]$)")
_PYTHON_WORDS = frozenset(keyword.kwlist + keyword.softkwlist)


def _is_fence(line: str) -> bool:
    return line.lstrip().startswith("```")


def _is_prose(line: str) -> bool:
    """Words as in a sentence; never a line of robot code (it starts with ``robot.`` or a Python keyword)."""
    match = _PROSE.match(line.strip())
    return match is not None and match.group(1) not in _PYTHON_WORDS


def extract_code(generated: str) -> str:
    """The candidate program in a raw generation: chat tokens, fences and trailing prose cut off.

    Only whole lines (and the tail after a chat token) are dropped; what is kept is never changed, so
    a wrong value or a stray statement inside the program is still judged as written. In order:

    1. Cut at the first chat special token (:data:`CHAT_TOKEN`: ``<|im_end|>``, ``<|endoftext|>``,
       ``<|eot_id|>``, any ``<|...|>``, ``</s>``, ``<end_of_turn>``, ``[/INST]``, ...), even mid-line.
    2. Opening fence: if the first line starting with three backticks (after indentation) has only
       blank lines and prose before it (none, or a preamble such as "Sure! Here is the code:"), drop
       it and everything before it.
    3. Keep lines up to, not including, the first that either starts (after its indentation,
       case-insensitive) with one of :data:`STOP_PREFIXES` (which includes the closing fence), or
       follows a blank line and reads as prose. Prose is a word that is not a Python keyword followed
       by at most one of ``!,.:;``, whitespace and a letter ("This moves", "Note that"), or a lone
       such word ending the line in ``!``, ``.`` or ``:`` ("Sure!", "Done."); a line of robot code
       never looks like that.
    4. Strip surrounding whitespace (a leading space from the tokenizer included).

    >>> extract_code("```python\\nrobot.stop()\\n```\\nThis stops the robot.")
    'robot.stop()'
    >>> extract_code(" robot.turn_left(angle=90.0)\\n\\nExplanation: turns left<|im_end|>")
    'robot.turn_left(angle=90.0)'
    """
    text = CHAT_TOKEN.split(generated, maxsplit=1)[0]
    lines = text.split("\n")
    fence = next((i for i, line in enumerate(lines) if _is_fence(line)), None)
    before = [line for line in lines[: fence or 0] if line.strip()]
    if fence is not None and all(_is_prose(line) for line in before):
        lines = lines[fence + 1 :]
    kept: list[str] = []
    for line in lines:
        stop = line.lstrip().lower().startswith(STOP_PREFIXES)
        if stop or (kept and not kept[-1].strip() and _is_prose(line)):
            break
        kept.append(line)
    return "\n".join(kept).strip()


# ----------------------------------------------------------------------------- settings from a file


def settings_from(value: Any, where: str) -> EvalSettings | None:
    """A sweep's ``evaluate:`` as :class:`EvalSettings`: false for none, true or absent for the defaults, or a
    mapping of some of its fields, each checked (``where`` starts each error line)."""
    if value is False:
        return None
    if value is None or value is True:
        return EVAL_DEFAULTS
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected false or a mapping of constrained, limit, batch_size, ...")
    known = EvalSettings.__dataclass_fields__
    for key, v in value.items():
        if key not in known:
            raise ConfigError(f"{where}: {key}: unknown; use {', '.join(known)}")
        problem = _eval_setting_problem(key, v)
        if problem:
            raise ConfigError(f"{where}: {key}: {v!r} is not {problem}")
    return EvalSettings(**value)


def _eval_setting_problem(key: str, value: Any) -> str | None:
    """What is wrong with one ``evaluate:`` setting (None: nothing), as the end of "... is not ..."."""
    from robolora.models import QUANTIZATIONS
    from robolora.placement import MAX_GPUS_PER_EVAL, parse_max_memory
    from robolora.robot.engines import ENGINES

    if key == "constrained":
        return None if isinstance(value, bool) else "a valid bool"
    if key in ("limit", "batch_size", "max_new_tokens", "repair_beams"):
        low = 0 if key in ("limit", "repair_beams") else 1
        return None if isinstance(value, int) and not isinstance(value, bool) and value >= low else "a valid int"
    choices = {"quantization": QUANTIZATIONS, "grammar_engine": ENGINES}.get(key)
    if choices is not None:
        allowed = (None, *choices) if key == "quantization" else choices
        return None if value in allowed else f"one of {', '.join(choices)}"
    if key == "max_memory" and value is not None:
        try:
            parse_max_memory(str(value), MAX_GPUS_PER_EVAL)
        except UserError as e:
            return f"a valid cap ({str(e).removeprefix('--max-memory').lstrip(': ')})"
    return None
