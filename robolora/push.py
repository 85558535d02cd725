"""``robolora push``: a trained adapter onto the Hugging Face Hub, as a model repository, in one commit.

Only what a user of the adapter needs is sent: its weights and config, its tokenizer (the chat template its
prompts were rendered with), the model card (``README.md``) and the scores (``eval.json``, where the run has
them). Checkpoints (DeepSpeed and optimizer states), metrics, tracker folders and the run's ``config.yaml``
(which holds this machine's paths) stay here. :func:`upload_plan` lists what is sent, and
:func:`commit_operations` turns that list into the commit's operations: both pure, so the tests read exactly
what a push would send; :func:`push` sends it.

The card is made ready for the Hub: its ``base_model`` names a hub model (a bundled alias becomes the
model it was converted from; a local path or a test model is left out, since the Hub refuses cards that
name no hub model) and its usage loads the adapter from the repository. A checkpoint folder, which has no
card, gets a short one.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from robolora.errors import UserError

#: The adapter itself: always sent.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
#: The tokenizer a run saves beside its adapter (transformers' file names), sent where present.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)
#: The scores ``robolora eval --json-out`` and a sweep write, sent where present.
SCORES = "eval.json"
CARD = "README.md"
HUB = "https://huggingface.co"


@dataclass(frozen=True)
class Upload:
    """One file of the commit: ``path_in_repo`` from ``source`` as it is, or from ``content`` (the card)."""

    path_in_repo: str
    source: Path | None = None
    content: bytes | None = None


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it names a model repository as ``ORG/NAME``; else one error saying how to write it.

    >>> check_repo_id("my-org/robot-lora")
    'my-org/robot-lora'
    >>> check_repo_id("robot-lora")
    Traceback (most recent call last):
    ...
    robolora.errors.UserError: --repo-id robot-lora: not a repository ID; write ORG/NAME (your user name or \
an organization, a slash, the model's name), such as my-org/robot-lora
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    bad = UserError(
        f"--repo-id {repo_id}: not a repository ID; write ORG/NAME (your user name or an organization, a slash, "
        "the model's name), such as my-org/robot-lora"
    )
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise bad
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise bad from None
    return repo_id


def hub_base_model(name: Any) -> str | None:
    """The hub model a card's ``base_model`` may name: a bundled alias's hub model, a hub name as it is; None for
    a local path, a test model or anything else the Hub would refuse.

    >>> hub_base_model("smollm2-135m"), hub_base_model("codellama/CodeLlama-7b-Python-hf")
    ('HuggingFaceTB/SmolLM2-135M-Instruct', 'codellama/CodeLlama-7b-Python-hf')
    >>> hub_base_model("tiny-llama"), hub_base_model("/models/my-llama"), hub_base_model("./a/b"), hub_base_model(None)
    (None, None, None, None)
    """
    from robolora.export import HUB_NAMES

    if not isinstance(name, str):
        return None
    name = HUB_NAMES.get(name, name)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not name.startswith((".", "-")) and ".." not in name:
        return name
    return None


def hub_card(text: str, repo_id: str, local_paths: list[str]) -> str:
    """The run's model card ready for the Hub: its front matter's ``base_model`` a hub model or left out, and the
    adapter loaded from ``repo_id`` where the card loads it from one of ``local_paths``.

    >>> card = '---\\nbase_model: tiny-llama\\ntags: [lora]\\n---\\n\\nfrom_pretrained(base, "/runs/a")\\n'
    >>> print(hub_card(card, "org/robot", ["/runs/a"]))
    ---
    tags: [lora]
    ---
    <BLANKLINE>
    from_pretrained(base, "org/robot")
    <BLANKLINE>
    """
    for path in local_paths:
        text = text.replace(f'"{path}"', f'"{repo_id}"').replace(
            f"--lora-path {path}\n", f'--lora-path "$(hf download {repo_id})"\n'
        )
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    if not match:
        return text
    try:
        front = yaml.safe_load(match[1])
    except yaml.YAMLError:
        return text
    if not isinstance(front, dict) or "base_model" not in front:
        return text
    base = hub_base_model(front["base_model"])
    if base is None:
        del front["base_model"]
    else:
        front["base_model"] = base
    from robolora.report import front_matter

    return "\n".join(front_matter(front)) + "\n" + text[match.end() :]


def adapter_card(folder: Path, repo_id: str) -> str:
    """A short card for an adapter folder without one (a checkpoint): base model, LoRA settings, usage."""
    from robolora.models import adapter_config
    from robolora.report import front_matter, lora_lines, section

    peft = adapter_config(folder)
    base = _run_model_name(folder) or peft.get("base_model_name_or_path") or "unknown"
    front: dict[str, Any] = {"library_name": "peft", "pipeline_tag": "text-generation"}
    if hub := hub_base_model(base):
        front["base_model"] = hub
    front["tags"] = ["lora", "robotics", "robolora"]
    modules = peft.get("target_modules")
    modules = ",".join(sorted(modules)) if isinstance(modules, list) else modules
    usage = [
        "```python",
        "from peft import PeftModel",
        "from robolora.models import load_model",
        "",
        f'model = PeftModel.from_pretrained(load_model("{base}"), "{repo_id}")',
        "```",
    ]
    lines = [
        *front_matter(front),
        "",
        f"# Robot-LoRA adapter for {base}",
        "",
        f"A LoRA adapter (from `{folder.name}`) that turns natural-language robot commands into robot API code.",
        "",
        *section("Model", lora_lines(base, peft.get("r"), peft.get("lora_alpha"), peft.get("lora_dropout"), modules)),
        *section("Usage", usage),
    ]
    return "\n".join(lines)


def _run_model_name(folder: Path) -> str | None:
    """The base model the run's config.yaml names (a checkpoint's is its run's)."""
    from robolora.fileio import read_mapping

    for candidate in (folder / "config.yaml", folder.parent / "config.yaml"):
        if candidate.is_file():
            name = read_mapping(candidate, flag="--lora-path").get("model_name")
            return name if isinstance(name, str) else None
    return None


def hub_adapter_config(text: str, base: str | None) -> str | None:
    """``adapter_config.json`` with its ``base_model_name_or_path`` naming the hub model ``base`` (PEFT loads
    the base from there: this machine's path of a converted model is nowhere else); None where it stays.

    >>> hub_adapter_config('{"r": 8, "base_model_name_or_path": "/cache/smollm2-135m"}', "org/base")
    '{\\n  "r": 8,\\n  "base_model_name_or_path": "org/base"\\n}\\n'
    >>> hub_adapter_config('{"base_model_name_or_path": "org/base"}', "org/base") is None
    True
    """
    config = json.loads(text)
    if base is None or not isinstance(config, dict) or config.get("base_model_name_or_path") == base:
        return None
    return json.dumps({**config, "base_model_name_or_path": base}, indent=2) + "\n"


def upload_plan(folder: Path, repo_id: str) -> list[Upload]:
    """What a push of the adapter in ``folder`` sends, in order: the adapter (its config naming the hub base
    model: :func:`hub_adapter_config`), the tokenizer files and ``eval.json`` that are there, and the model card
    made ready for the Hub (:func:`hub_card`), or a short one where the folder has none (:func:`adapter_card`)."""
    config = hub_adapter_config((folder / ADAPTER_FILES[0]).read_text(), hub_base_model(_run_model_name(folder)))
    changed = {ADAPTER_FILES[0]: config.encode()} if config is not None else {}
    names = [*ADAPTER_FILES, *TOKENIZER_FILES, SCORES]
    plan = [
        Upload(name, content=changed[name]) if name in changed else Upload(name, source=folder / name)
        for name in names
        if (folder / name).is_file()
    ]
    card = folder / CARD
    if card.is_file():
        paths = sorted({str(folder), str(folder.absolute()), str(folder.resolve())}, key=len, reverse=True)
        text = hub_card(card.read_text(encoding="utf-8"), repo_id, paths)
    else:
        text = adapter_card(folder, repo_id)
    return [*plan, Upload(CARD, content=text.encode())]


def commit_operations(plan: list[Upload]) -> list[Any]:
    """The plan as the Hub commit's operations: one ``CommitOperationAdd`` per file."""
    from huggingface_hub import CommitOperationAdd

    return [
        CommitOperationAdd(path_in_repo=u.path_in_repo, path_or_fileobj=u.content if u.source is None else u.source)
        for u in plan
    ]


def hub_token(given: str | None) -> str:
    """``--token``, else ``$HF_TOKEN``, else the token ``hf auth login`` saved; one error where there is none."""
    from huggingface_hub import get_token

    token = given or get_token()
    if not token:
        raise UserError(
            "--token: no Hugging Face token; create one with write access at https://huggingface.co/settings/tokens "
            "and set HF_TOKEN, run `hf auth login`, or pass --token"
        )
    return token


def push(
    lora_path: str, repo_id: str, private: bool = False, revision: str | None = None, token: str | None = None
) -> tuple[Any, list[str]]:
    """Create the repository (kept as it is where it exists) and send the adapter in one commit; returns the
    commit's ``CommitInfo`` and the files sent."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HTTPError

    from robolora.models import adapter_dir

    folder = adapter_dir(lora_path, flag="--lora-path")
    check_repo_id(repo_id)
    plan = upload_plan(folder, repo_id)
    operations = commit_operations(plan)
    api = HfApi(token=hub_token(token))
    try:
        api.create_repo(repo_id, private=private or None, repo_type="model", exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=f"Upload the robolora adapter from {folder.name}",
            repo_type="model",
            revision=revision,
        )
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        hint = " (check that --token has write access to it)" if status in (401, 403) else ""
        message = " ".join((e.server_message or str(e)).split())[:300]
        raise UserError(f"--repo-id {repo_id}: the Hub refused the push, HTTP {status}: {message}{hint}") from None
    except (HTTPError, OSError) as e:
        where = api.endpoint
        raise UserError(
            f"push: cannot reach {where} ({type(e).__name__}: {e}); check the network or HF_ENDPOINT"
        ) from None
    return info, [u.path_in_repo for u in plan]


def cmd_push(args: argparse.Namespace) -> int:
    """``robolora push``: print what was sent and where."""
    info, sent = push(args.lora_path, args.repo_id, private=args.private, revision=args.revision, token=args.token)
    print(f"pushed {', '.join(sent)} to {info.repo_url} ({args.revision or 'main'}): {info.commit_url}")
    return 0
