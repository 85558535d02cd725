"""Prompts: how a command is put to the model, in training, inference and the exported model alike.

A prompt is the system turn, optional worked examples, then the user's command (normalized, see
:func:`~robolora.robot.normalize.normalize_command`), rendered with the tokenizer's chat template, else
:data:`PLAIN_TEMPLATE`. :func:`export_chat_template` gives the chat template saved with a trained model,
so a chat server renders the same prompt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from robolora.robot.normalize import normalize_command

#: The system turn of every training and inference prompt. Short on purpose: each of its tokens is
#: computed for every example in every step, and a trained adapter needs no instructions.
SYSTEM_PROMPT = "Write robot API code."
#: The system turn of a base model's few-shot prompt, which has to explain the task.
BASE_SYSTEM_PROMPT = "You are a robot controller. Translate the user's command into robot API code."
PLAIN_TEMPLATE = "### System:\n{system}\n\n### Command:\n{command}\n\n### Code:\n"

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
