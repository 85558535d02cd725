"""Merge a LoRA adapter into its base model and save a plain transformers model.

The merge walks the base's safetensors shard by shard (:mod:`robolora.merge`), so host memory holds
the adapter and one adapted tensor, not the model twice in float32; the merged model keeps the base's
dtype and shard layout. It loads with ``AutoModelForCausalLM.from_pretrained`` alone (no PEFT) and generates
the same tokens as base + adapter; the export checks that on a few commands before it finishes.
Its saved chat template holds the training prompt's system turn (:func:`robolora.prompts.export_chat_template`),
so the user's command alone, as one user message, makes the prompt the model was trained on (in
transformers, vLLM or TGI alike). Its README.md is a model card: the base model, the LoRA settings,
the run's scores where it has an ``eval.json``, and how to prompt it, input normalization included.
"""

from __future__ import annotations

import json
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robolora.errors import UserError
from robolora.models import adapter_base_model, adapter_config, adapter_dir
from robolora.report import front_matter, lora_lines, section, table

if TYPE_CHECKING:
    from robolora.merge import MergeStats

PROBES = ("move forward 3 meters", "pick up the red ball", "if you see a cup, pick it up")
#: Hub names of the registry's aliases (the card's ``base_model``); other names are kept as given.
HUB_NAMES = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
#: A command as a user might type it, to show the normalization in the card.
NORMALIZE_EXAMPLE = 'GO FORWARD TEN FEET AT FIFTY CM/S, THEN WAIT TWO MINUTES AND SAY "Done"'
RATE_NAMES = {
    "syntax_rate": "syntax",
    "api_valid_rate": "api-valid",
    "exact_rate": "exact",
    "semantic_rate": "semantic",
}


def export_merged(lora_path: str | Path, output: str | Path) -> Path:
    """Write the merged model, tokenizer and model card to ``output`` (a new directory), verified: the saved
    chat template renders each probe command, given alone, as the project does, and the reloaded model
    predicts base + adapter's next token at every position of their answers to the probes (teacher-forced;
    see :func:`_agreement`).

    The weights are merged shard by shard (:mod:`robolora.merge`), in the base's dtype; base + adapter,
    loaded first for the reference answers, is let go before the merge, and the merged model is loaded
    only to check it: at most one copy of the model is in memory at a time."""
    lora = adapter_dir(lora_path)
    base_name = adapter_base_model(lora)  # a damaged adapter is one error before any model loads
    import gc

    from robolora.infer import Generator
    from robolora.merge import base_dtype, base_folder
    from robolora.prompts import export_chat_template

    out = _new_output_dir(output)
    base = base_folder(base_name)
    dtype = base_dtype(base)
    with_adapter = Generator.load(lora, merge=False, dtype=dtype)
    expected_prompts = [with_adapter.prompt_ids(p) for p in PROBES]
    expected = _reference(with_adapter, expected_prompts)
    tokenizer = with_adapter.tokenizer
    del with_adapter
    gc.collect()
    card = _card_of(lora, out, plain_prompt=not tokenizer.chat_template)
    tokenizer.chat_template = export_chat_template(tokenizer)
    stats, agreement = _save_verified(lora, base, tokenizer, card, out, expected_prompts, expected, dtype)
    print(
        f"exported {lora_path} merged into its base model to {out} ({stats.merged} weights in {stats.shards} "
        f"shard{'s' * (stats.shards != 1)}, peak host memory of the merge +{_mib(stats.peak_rss_growth)}); it "
        f"predicts base + adapter's next token {agreement} of their answers to {len(PROBES)} probe commands, "
        "and its chat template holds the training prompt (see its README.md)"
    )
    return out


def _mib(size: int) -> str:
    """A byte count for people.

    >>> _mib(3 << 20), _mib(5 << 30)
    ('3 MiB', '5.0 GiB')
    """
    return f"{size / (1 << 30):.1f} GiB" if size >= 1 << 30 else f"{round(size / (1 << 20))} MiB"


def _new_output_dir(output: str | Path) -> Path:
    """``output`` as a Path, refused where it holds anything: an export never mixes with other files."""
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--output: {out} already exists and is not empty; choose a new directory")
    return out


class ExportCheckFailed(UserError):
    """The merged model failed its check against base + adapter: nothing was written to ``--output``."""

    exit_code = 1


#: Tokens of each probe answer the merged model is checked on.
PROBE_TOKENS = 64


@dataclass
class Reference:
    """Base + adapter on one probe: the tokens checked (prompt and answer), and at each answer position
    the token it predicts and by how much that token's logit leads the runner-up's."""

    tokens: list[int]
    start: int
    predicted: list[int]
    margins: list[float]


def _next_tokens(model: Any, tokens: list[int], start: int) -> tuple[Any, Any]:
    """The logits at positions ``start - 1 ..`` of ``tokens`` (those that predict the answer), float32."""
    import torch

    device = model.get_input_embeddings().weight.device
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tokens], device=device)).logits[0, start - 1 : -1]
    return logits.float().cpu()


def _reference(generator: Any, prompts: list[list[int]]) -> list[Reference]:
    """Base + adapter's greedy answers to the probes (unconstrained) and its predictions along them."""
    answers = generator.generate(list(PROBES), max_new_tokens=PROBE_TOKENS, constrained=False)
    found = []
    for prompt, answer in zip(prompts, answers, strict=True):
        ids = generator.tokenizer(answer.raw, add_special_tokens=False)["input_ids"][:PROBE_TOKENS]
        tokens = prompt + (ids or [generator.tokenizer.eos_token_id])
        top = _next_tokens(generator.model, tokens, len(prompt)).topk(2, dim=-1)
        found.append(
            Reference(tokens, len(prompt), top.indices[:, 0].tolist(), (top.values[:, 0] - top.values[:, 1]).tolist())
        )
    return found


def near_tie(dtype: Any) -> float:
    """The logit lead below which two models that differ only by rounding may rank tokens differently:
    merging rounds ``W + scale * B @ A`` to the weights' dtype once, where the adapter adds in float.

    >>> import torch
    >>> near_tie(torch.float32), near_tie(torch.bfloat16)
    (0.001, 0.25)
    """
    import torch

    return {torch.float32: 1e-3, torch.float16: 0.05}.get(dtype, 0.25)


def _agreement(model: Any, references: list[Reference], tolerance: float) -> str:
    """Check the merged ``model`` predicts base + adapter's token wherever base + adapter's choice leads by
    more than ``tolerance``; returns how it agreed, for the summary line.

    Raises:
        ExportCheckFailed: a clear prediction differs (the merge changed the model).
    """
    positions = ties = 0
    for probe, ref in zip(PROBES, references, strict=True):
        got = _next_tokens(model, ref.tokens, ref.start).argmax(dim=-1).tolist()
        for i, (mine, theirs, lead) in enumerate(zip(got, ref.predicted, ref.margins, strict=True)):
            positions += 1
            if mine != theirs and lead > tolerance:
                raise ExportCheckFailed(
                    f"export: on the probe {probe!r}, at answer token {i}, the merged model predicts token "
                    f"{mine} and base + adapter {theirs}, which leads by a logit margin of {lead:.3g} (rounding "
                    f"allows {tolerance:g}): the merge changed the model, so nothing was written to --output"
                )
            ties += mine != theirs
    near = f" ({ties} near-tie{'s' * (ties != 1)} within rounding ranked otherwise)" if ties else ""
    return f"at all {positions} positions{near}"


def _card_of(lora: Path, out: Path, plain_prompt: bool) -> str:
    """The exported model's card, from the adapter's run: its config (else adapter_config.json) and scores."""
    config = _run_config(lora)
    return export_card(
        base=config.get("model_name") or adapter_base_model(lora),
        lora_settings=_lora_settings(config, lora),
        scores=_eval_scores(lora),
        adapter=str(lora),
        out=str(out),
        plain_prompt=plain_prompt,
    )


def _save_verified(
    lora: Path,
    base: Path,
    tokenizer: Any,
    card: str,
    out: Path,
    expected_prompts: list[list[int]],
    expected: list[Reference],
    dtype: Any,
) -> tuple[MergeStats, str]:
    """Merge into a temporary folder beside ``out``, add tokenizer and card, check them (:func:`_verify`),
    then rename the folder into place: ``out`` never holds an unchecked or half-written export."""
    from robolora.merge import merge_adapter

    out.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not tempfile.mkdtemp: the folder gets the usual permissions (0777 less the umask), not 0700.
    tmp = out.parent / f".{out.name}-{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        stats = merge_adapter(base, lora, tmp)
        _save_generation_config(tmp, tokenizer)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(card)
        agreement = _verify(tmp, expected_prompts, expected, dtype)
        match_folder_mode(tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return stats, agreement


def _save_generation_config(folder: Path, tokenizer: Any) -> None:
    """The merged folder's generation_config.json: the base's (else its config's), stopping at EOS."""
    from transformers import AutoConfig, GenerationConfig

    try:
        generation_config = GenerationConfig.from_pretrained(folder)
    except OSError:
        generation_config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(folder))
    _stop_at_eos(generation_config, tokenizer)
    generation_config.save_pretrained(folder)


def _verify(folder: Path, expected_prompts: list[list[int]], expected: list[Reference], dtype: Any) -> str:
    """Load the saved model as a user would, with plain transformers, and check that its chat template
    renders each probe, given alone, as the training prompt's tokens, and that it predicts what base +
    adapter predict along their answers (:func:`_agreement`).

    Raises:
        ExportCheckFailed: it does not.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from robolora.robot.normalize import normalize_command

    plain = AutoTokenizer.from_pretrained(folder)
    for probe, ids in zip(PROBES, expected_prompts, strict=True):
        messages = [{"role": "user", "content": normalize_command(probe)}]
        text = plain.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if plain(text, add_special_tokens=False)["input_ids"] != ids:
            raise ExportCheckFailed(
                f"export: the saved chat template renders {probe!r} as {text!r}, not as in training, so nothing "
                "was written to --output"
            )
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return _agreement(reloaded, expected, near_tie(dtype))


def _stop_at_eos(generation_config: Any, tokenizer: Any) -> None:
    """Make plain ``generate`` stop where training ended every answer: at the tokenizer's EOS token."""
    eos = tokenizer.eos_token_id
    ids = generation_config.eos_token_id
    listed = ids if isinstance(ids, list) else [] if ids is None else [ids]
    if eos is not None and eos not in listed:
        generation_config.eos_token_id = [*listed, eos] if listed else eos
    if generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id


def match_folder_mode(folder: Path) -> None:
    """Give everything in ``folder`` the permissions its own mode implies (files: the folder's less the
    execute bits), as files written under the same umask get; some writers (safetensors) make 0600 files."""
    mode = folder.stat().st_mode & 0o777
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod(mode if path.is_dir() else mode & 0o666)


def _run_config(lora: Path) -> dict[str, Any]:
    """The run's config.yaml (a checkpoint's is its run's), or {} where there is none."""
    from robolora.fileio import read_mapping

    run = [lora.parent / "config.yaml"] if lora.name.startswith("checkpoint-") else []
    for candidate in [lora / "config.yaml", *run]:
        if candidate.exists() or candidate.is_symlink():
            return read_mapping(candidate, flag="--lora-path")  # checked: a damaged file is one error
    return {}


def _eval_scores(lora: Path) -> dict[str, float]:
    """The overall rates of the adapter's ``eval.json`` (written by a sweep or ``robolora eval --json-out``),
    by short name; {} where there is none."""
    path = lora / "eval.json"
    if not path.is_file():
        return {}
    from robolora.fileio import FileReadError, load_json

    try:
        data = load_json(path, "a JSON file of scores")
    except FileReadError as e:
        warnings.warn(f"{e}: not read; the model card shows no scores", stacklevel=2)
        return {}
    overall = data.get("overall") if isinstance(data, dict) else None
    scores = next(iter(overall.values()), {}) if isinstance(overall, dict) and overall else {}
    scores = scores if isinstance(scores, dict) else {}
    return {name: scores[key] for key, name in RATE_NAMES.items() if isinstance(scores.get(key), (int, float))}


def _lora_settings(config: dict[str, Any], lora: Path) -> dict[str, Any]:
    """r, alpha, dropout and target modules (and layers, where chosen) of the run's config, else of the
    adapter's adapter_config.json."""
    if config:
        settings = {
            "r": config.get("lora_r"),
            "alpha": config.get("lora_alpha"),
            "dropout": config.get("lora_dropout"),
            "target_modules": config.get("lora_target_modules"),
        }
        return settings | ({"layers": config["lora_layers"]} if config.get("lora_layers") else {})
    peft = adapter_config(lora)
    modules = peft.get("target_modules")
    return {
        "r": peft.get("r"),
        "alpha": peft.get("lora_alpha"),
        "dropout": peft.get("lora_dropout"),
        "target_modules": ",".join(sorted(modules)) if isinstance(modules, list) else modules,
    }


def export_card(
    base: str, lora_settings: dict[str, Any], scores: dict[str, float], adapter: str, out: str, plain_prompt: bool
) -> str:
    """The README.md of an exported model: Hugging Face front matter, LoRA settings, scores, prompt and usage.

    ``scores``: the run's overall rates by short name (:func:`_eval_scores`), {} where it has none;
    ``plain_prompt``: the base model has no chat template of its own (the saved one renders the plain prompt).

    >>> card = export_card("tiny-llama", {"r": 8, "alpha": 16}, {"semantic": 0.5}, "run", "merged", False)
    >>> import yaml
    >>> front = yaml.safe_load(card.split("---")[1])
    >>> front["library_name"], front["lora"]["r"], front["eval"]
    ('transformers', 8, {'semantic': 0.5})
    """
    from robolora.robot.normalize import normalize_command

    front: dict[str, Any] = {
        "base_model": HUB_NAMES.get(base, base),
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["robotics", "code", "lora", "merged", "robolora"],
        "lora": lora_settings,
    }
    if scores:
        front["eval"] = scores
    example = normalize_command(NORMALIZE_EXAMPLE)
    lines = [
        *front_matter(front),
        "",
        f"# Robot-LoRA: {base} with its LoRA adapter merged in",
        "",
        "Turns a natural-language robot command into robot API code. A plain transformers model: it runs without",
        "PEFT or robolora (transformers, vLLM and TGI read its chat template).",
        "",
        *section("Model", _model_lines(base, lora_settings, adapter)),
        *(section("Evaluation", _score_lines(scores)) if scores else []),
        *section("Prompt", [_prompt_note(plain_prompt)]),
        *section("Input normalization", _normalization_lines(example)),
        *section("Usage", _merged_usage(out, example)),
    ]
    return "\n".join(lines)


def _model_lines(base: str, s: dict[str, Any], adapter: str) -> list[str]:
    """The base model, the LoRA settings ``s`` (as given: None where unknown) and the adapter merged in."""
    return [
        *lora_lines(base, s.get("r"), s.get("alpha"), s.get("dropout"), s.get("target_modules")),
        *([f"- layers: `{s['layers']}`"] if "layers" in s else []),
        f"- merged from the adapter `{adapter}`",
    ]


def _score_lines(scores: dict[str, float]) -> list[str]:
    """The run's overall rates, as percentages."""
    return [
        "On the run's validation split (`eval.json`):",
        "",
        *table("metric", [(name, f"{value:.1%}") for name, value in scores.items()], value_header="rate"),
    ]


def _prompt_note(plain_prompt: bool) -> str:
    """What the saved chat template adds to the user's command, and which prompt it renders."""
    from robolora.prompts import SYSTEM_PROMPT

    note = (
        f'The saved chat template makes "{SYSTEM_PROMPT}" the system turn of a conversation that has none, as '
        "in training: send the command alone, as the one user message."
    )
    if plain_prompt:
        note += (
            " The base model has no chat template of its own; this one renders the plain prompt it was trained "
            "on (`### System:`, `### Command:`, `### Code:`)."
        )
    return note


def _normalization_lines(example: str) -> list[str]:
    """How to rewrite a command as the model was trained on it, with :data:`NORMALIZE_EXAMPLE` as ``example``."""
    return [
        "The model was trained on commands with their quantities in the robot API's units (metres, metres per",
        "second, seconds, degrees) written as digits, and reads lower-case words best. Rewrite a command the",
        "same way before you send it: centimetres /100, millimetres /1000, feet x0.3048, inches x0.0254, yards",
        'x0.9144, kilometres x1000, minutes x60, hours x3600; number words as digits (at most 2 decimals); "twice"',
        'as "2 times"; "half a turn" as "a 180 degree turn"; a command typed all in capitals in lower case;',
        'a slip of the finger in a word the robot knows corrected ("ofice" as "office"). Quoted text stays as it',
        "is. For example:",
        "",
        f"- typed: `{NORMALIZE_EXAMPLE}`",
        f"- sent: `{example}`",
        "",
        "With robolora installed, `from robolora.robot.normalize import normalize_command` does it.",
    ]


def _merged_usage(out: str, example: str) -> list[str]:
    """Python that loads the exported model from ``out`` with transformers alone and answers ``example``."""
    return [
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f"path = {json.dumps(out)}",
        "tokenizer = AutoTokenizer.from_pretrained(path)",
        "model = AutoModelForCausalLM.from_pretrained(path)",
        f"command = {json.dumps(example)}  # normalized (see above)",
        'messages = [{"role": "user", "content": command}]  # no system turn: the template adds it',
        "prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)",
        'inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")',
        "output = model.generate(**inputs, max_new_tokens=128, do_sample=False)",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))',
        "```",
    ]
