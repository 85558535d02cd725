"""The ``robolora`` command.

    robolora data generate --num-examples 3000 --seed 0 --output data/robot_dataset.json
    robolora data validate data/robot_dataset.json
    robolora data stats data/robot_dataset.json --model-name smollm2-135m
    robolora model prepare smollm2-135m
    robolora robot check 'robot.move_forward(distance=3.0, speed=1.0)'
    robolora config --config examples/smollm2-135m.yaml --lora-r 64
    robolora train --config examples/smollm2-135m.yaml
    robolora plan --model 13B --gpus 8x40GB
    robolora pipeline --config curriculum.yaml
    robolora sweep --config examples/sweeps/smollm2-ensemble.yaml --max-concurrent 2
    robolora submit --address http://HEAD:8265 -- train --config examples/codellama-7b.yaml --output-dir /mnt/shared/r1
    robolora jobs status raysubmit_XXXX --address http://HEAD:8265

Every error a user can fix is printed as ``robolora: error: ...`` with a non-zero exit, no traceback.
This module holds the parser and the entry point; what each sub-command does is in ``robolora.commands``,
``robolora.eval_commands`` and ``robolora.plan_command``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Sequence

from robolora.commands import (
    cmd_config,
    cmd_data_generate,
    cmd_data_stats,
    cmd_data_validate,
    cmd_export,
    cmd_jobs,
    cmd_model_list,
    cmd_model_prepare,
    cmd_pipeline,
    cmd_robot_check,
    cmd_sweep,
    cmd_train,
)
from robolora.config import NUMBER_BOUNDS
from robolora.errors import UserError
from robolora.eval_commands import cmd_demo, cmd_eval
from robolora.evaluate import EVAL_DEFAULTS
from robolora.flags import Parser
from robolora.models import QUANTIZATIONS
from robolora.plan_command import cmd_plan
from robolora.prompts import FEW_SHOT_EXAMPLES
from robolora.robot.engines import ENGINES


def int_in(low: int, high: int, note: str = "") -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``; anything else is refused naming the range.

    >>> int_in(1, 4096)("32"), int_in(0, 10, "0: all")("0")
    (32, 0)
    >>> int_in(1, 4096)("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be an integer in 1..4096, got 0
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # not a number, or more digits than Python converts
            shown = text if len(text) <= 60 else f"{text[:40]}... ({len(text):,} characters)"
            raise argparse.ArgumentTypeError(f"invalid int value: {shown!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be an integer in {low}..{high}{f' ({note})' if note else ''}, got {value}"
            )
        return value

    parse.__name__ = "int"
    return parse


#: Bounds of the flags of data generate, eval, demo and data stats (the training flags' are in NUMBER_BOUNDS).
SEED_MAX = NUMBER_BOUNDS["seed"].high
MAX_LENGTH = NUMBER_BOUNDS["max_length"]
MAX_EVAL_RECORDS = 10_000_000
MAX_GENERATION_BATCH = 4096
MAX_NEW_TOKENS = 8192
MAX_REPAIR_BEAMS = 16
MAX_JOBS_TIMEOUT_S = 3600


def cmd_submit(args: argparse.Namespace) -> int:
    """The one handler kept here: it checks the command to submit with this module's own parser."""
    from robolora.jobs import parse_env, submit

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return submit(
        command,
        build_parser(),
        address=args.address,
        working_dir=args.working_dir,
        env=parse_env(args.env),
        job_id=args.job_id,
        wait=not args.no_wait,
        request_timeout_s=args.timeout,
    )


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The full ``robolora`` parser with its subcommands."""
    parser = Parser(prog="robolora", description="Distributed LoRA fine-tuning for natural-language robot programming.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for add in (
        _add_data_commands,
        _add_model_commands,
        _add_robot_commands,
        _add_train_command,
        _add_eval_command,
        _add_demo_command,
        _add_serve_command,
        _add_pipeline_command,
        _add_sweep_command,
        _add_export_command,
        _add_push_command,
        _add_config_command,
        _add_plan_command,
        _add_submit_command,
        _add_jobs_commands,
    ):  # in this order in `robolora --help`
        add(sub)
    return parser


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="generate, validate and inspect datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True, parser_class=Parser)
    gen = dsub.add_parser("generate", help="write a synthetic dataset in canonical form")
    gen.add_argument("--num-examples", type=int, default=3000, help="records to write (default: 3000)")
    gen.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help=f"random seed, 0..{SEED_MAX} (default: 0)")
    gen.add_argument("--output", required=True, help="a .json (list) or .jsonl file to create")
    gen.add_argument("--force", action="store_true", help="replace the output file if it exists")
    gen.set_defaults(func=cmd_data_generate)
    val = dsub.add_parser("validate", help="check dataset files; print every problem with file, record and field")
    val.add_argument("files", nargs="+", metavar="FILE")
    stats = dsub.add_parser("stats", help="records per category, lengths in characters and tokens")
    stats.add_argument("file", metavar="FILE")
    stats.add_argument("--model-name", default=None, help="also count tokens with this model's tokenizer and template")
    stats.add_argument(
        "--max-length",
        type=int_in(MAX_LENGTH.low, MAX_LENGTH.high),
        default=256,
        help=f"report truncation at this length, {MAX_LENGTH.low}..{MAX_LENGTH.high} (default: 256)",
    )
    stats.add_argument("--json", action="store_true", help="print JSON")
    for p, func in ((val, cmd_data_validate), (stats, cmd_data_stats)):
        p.add_argument(
            "--check-api",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="require every output to be valid robot API code (default: on)",
        )
        p.set_defaults(func=func)


def _add_model_commands(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="the model registry")
    msub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True, parser_class=Parser)
    prep = msub.add_parser("prepare", help="resolve a model, converting a bundled one into the cache; print its path")
    prep.add_argument("name", help="an alias (smollm2-135m, tiny-llama), a local path or a hub name")
    prep.set_defaults(func=cmd_model_prepare)
    msub.add_parser("list", help="registered aliases and whether they are cached").set_defaults(func=cmd_model_list)


def _add_robot_commands(sub: argparse._SubParsersAction) -> None:
    robot = sub.add_parser("robot", help="the robot API")
    rsub = robot.add_subparsers(dest="robot_command", metavar="ACTION", required=True, parser_class=Parser)
    chk = rsub.add_parser("check", help="check robot code (an argument, or - for stdin); print its canonical form")
    chk.add_argument("code")
    chk.set_defaults(func=cmd_robot_check)


def _add_train_command(sub: argparse._SubParsersAction) -> None:
    from robolora.flags import add_train_arguments

    train = sub.add_parser(
        "train",
        help="fine-tune with LoRA on Ray Train + DeepSpeed workers (the training guide's train_robot.py)",
        description="Fine-tune a code LLM with LoRA on robot commands: Ray Train workers, DeepSpeed ZeRO, PEFT.",
    )
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The models eval and demo run (adapters, the base model) and how they generate."""
    p.add_argument(
        "--lora-path",
        action="append",
        default=[],
        help="a trained adapter: a run's output directory or a checkpoint-<step> folder (repeat to compare several)",
    )
    p.add_argument("--base-only", action="store_true", help="the base model without the adapter")
    p.add_argument("--model-name", default=None, help="the base model (default: the one the adapter was trained on)")
    p.add_argument(
        "--few-shot",
        type=int_in(0, len(FEW_SHOT_EXAMPLES)),
        default=len(FEW_SHOT_EXAMPLES),
        help=f"worked examples in the base model's prompt, 0..{len(FEW_SHOT_EXAMPLES)} "
        f"(default: {len(FEW_SHOT_EXAMPLES)})",
    )
    p.add_argument(
        "--constrained",
        action=argparse.BooleanOptionalAction,
        default=EVAL_DEFAULTS.constrained,
        help=f"only let the model emit code the robot API accepts (default: {_on_off(EVAL_DEFAULTS.constrained)})",
    )
    p.add_argument(
        "--grammar-engine",
        choices=ENGINES,
        default=EVAL_DEFAULTS.grammar_engine,
        help="what constrains decoding: xgrammar or llguidance (each needs its package) or recognizer (built in) "
        f"(default: {EVAL_DEFAULTS.grammar_engine})",
    )
    p.add_argument(
        "--repair-beams",
        type=int_in(0, MAX_REPAIR_BEAMS),
        default=EVAL_DEFAULTS.repair_beams,
        help="decode again with this many beams a greedy program that does not fit its command (leaves out a "
        "number, quoted text, colour, place, action or condition it states, makes one up, or scopes a counted loop "
        "against its words), keeping the best beam that fits; "
        f"0..{MAX_REPAIR_BEAMS}, 0: off (default: {EVAL_DEFAULTS.repair_beams})",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int_in(1, MAX_NEW_TOKENS),
        default=EVAL_DEFAULTS.max_new_tokens,
        help=f"longest program, in tokens, 1..{MAX_NEW_TOKENS} (default: {EVAL_DEFAULTS.max_new_tokens})",
    )
    p.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        default=EVAL_DEFAULTS.quantization,
        help="load the base model's weights quantized by bitsandbytes: 4bit (NF4, about a quarter of bf16) or 8bit "
        "(default: not quantized)",
    )
    p.add_argument(
        "--max-memory",
        default=EVAL_DEFAULTS.max_memory,
        help="spread the weights over the visible GPUs within these caps, e.g. 0:20GiB,1:20GiB,cpu:64GiB, or 40GB "
        "for every GPU (default: one GPU holds the model; several GPUs share it)",
    )


def _add_eval_command(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="syntax, api-valid, exact and semantic accuracy per category")
    _add_model_arguments(ev)
    ev.add_argument("--compare-base", action="store_true", help="also evaluate the base model (few-shot)")
    ev.add_argument(
        "--ensemble",
        action="store_true",
        help="also score the adapters' vote: per command the program most of them wrote (canonical form), "
        "ties to the surest",
    )
    ev.add_argument("--data-json", default=None, help="records to evaluate on (default: the run's val.jsonl)")
    ev.add_argument("--predictions-out", default=None, help="write {input, prediction, reference} lines here")
    ev.add_argument("--json-out", default=None, help="write the scores as JSON here")
    ev.add_argument(
        "--batch-size",
        type=int_in(1, MAX_GENERATION_BATCH),
        default=EVAL_DEFAULTS.batch_size,
        help=f"commands generated together, 1..{MAX_GENERATION_BATCH} (default: {EVAL_DEFAULTS.batch_size})",
    )
    every = ", every record" if EVAL_DEFAULTS.limit == 0 else ""
    ev.add_argument(
        "--limit",
        type=int_in(0, MAX_EVAL_RECORDS, "0: every record"),
        default=EVAL_DEFAULTS.limit,
        help=f"evaluate only the first N records (default: {EVAL_DEFAULTS.limit}{every})",
    )
    ev.set_defaults(func=cmd_eval)


def _add_demo_command(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo",
        help="type commands, see the generated robot code and whether it is valid (several adapters vote)",
    )
    _add_model_arguments(demo)
    demo.add_argument("--command", default=None, help="one command, then exit")
    demo.set_defaults(func=cmd_demo, compare_base=False)


def _add_serve_command(sub: argparse._SubParsersAction) -> None:
    from robolora.serve import SERVE_DESCRIPTION, add_serve_arguments, cmd_serve

    serve = sub.add_parser(
        "serve",
        help="serve adapters behind an OpenAI-compatible HTTP API (completions, chat, models; batched, constrained)",
        description=SERVE_DESCRIPTION,
    )
    add_serve_arguments(serve, int_in, max_batch=MAX_GENERATION_BATCH, max_tokens=MAX_NEW_TOKENS)
    serve.set_defaults(func=cmd_serve)


def _add_pipeline_command(sub: argparse._SubParsersAction) -> None:
    pipe = sub.add_parser(
        "pipeline",
        help="multi-stage training (curricula): stages with their own data and settings, each from the last's adapter",
    )
    pipe.add_argument("--config", required=True, help="the pipeline file: output_dir, shared settings, stages")
    pipe.add_argument(
        "--dry-run", action="store_true", help="check every stage, print what would train and what would be kept, stop"
    )
    pipe.set_defaults(func=cmd_pipeline)


def _add_sweep_command(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser(
        "sweep",
        help="train variants of a config concurrently on Ray Tune, compare them, link the best, score their vote",
    )
    sw.add_argument("--config", required=True, help="the sweep file: output_dir, base, shared, variants and/or grid")
    sw.add_argument(
        "--max-concurrent", type=int, default=None, help="variants training at once (default: what the cluster holds)"
    )
    sw.add_argument(
        "--dry-run",
        action="store_true",
        help="check every variant, list their resources and what would train or be kept, then stop (starts no Ray)",
    )
    sw.set_defaults(func=cmd_sweep)


def _add_export_command(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("export", help="merge an adapter into its base model and save a plain transformers model")
    exp.add_argument("--lora-path", required=True, help="a run's output directory or a checkpoint-<step> folder")
    exp.add_argument("--output", required=True, help="a new directory for the merged model")
    exp.set_defaults(func=cmd_export)


def _add_push_command(sub: argparse._SubParsersAction) -> None:
    from robolora.push import cmd_push

    push = sub.add_parser(
        "push",
        help="upload an adapter (weights, tokenizer, model card, eval.json) to the Hugging Face Hub",
        description="Upload a trained adapter to a Hugging Face Hub model repository in one commit: the adapter, "
        "its tokenizer, the model card (README.md, made ready for the Hub) and eval.json where present; never "
        "checkpoints, optimizer states, metrics or the run's config. The repository is created where it is missing.",
    )
    push.add_argument("--lora-path", required=True, help="a run's output directory or a checkpoint-<step> folder")
    push.add_argument("--repo-id", required=True, help="the model repository, ORG/NAME (a user or organization)")
    push.add_argument("--private", action="store_true", help="create the repository private (an existing one is kept)")
    push.add_argument(
        "--revision", default=None, help="the branch to commit to, made from main if missing (default: main)"
    )
    push.add_argument(
        "--token",
        default=None,
        help="a Hugging Face token with write access (default: $HF_TOKEN, else the one `hf auth login` saved; "
        "prefer those: a flag shows in the process list)",
    )
    push.set_defaults(func=cmd_push)


def _add_config_command(sub: argparse._SubParsersAction) -> None:
    from robolora.flags import add_train_arguments

    cfg = sub.add_parser("config", help="print the resolved training config (defaults < --config file < flags)")
    add_train_arguments(cfg)
    cfg.set_defaults(func=cmd_config)


def _add_plan_command(sub: argparse._SubParsersAction) -> None:
    from robolora.models import QUANTIZATIONS

    plan = sub.add_parser(
        "plan",
        help="per-GPU memory and the ZeRO stage, offload and batch split that fit; the guide's VRAM table beside it",
        description="Plan a run's layout from the model's size, the sequence length, the batch, LoRA and the GPUs: "
        "per-GPU memory of every ZeRO layout, the simplest one that fits and why. Exits 1 when nothing fits.",
    )
    plan.add_argument(
        "--model",
        "--model-name",
        dest="model_name",
        default=None,
        help="a size (7B, 13B, 34B: CodeLlama's dimensions, no download), an alias, a path or a hub name, read "
        "from the hub or, when the hub is out of reach, from the local hub cache (default: the config's model)",
    )
    _add_plan_hardware_arguments(plan)
    plan.add_argument("--max-length", type=int, default=None, help="tokens per example (default: the config's)")
    plan.add_argument("--batch-size", type=int, default=None, help="examples per GPU and micro-step (default: config)")
    plan.add_argument("--lora-r", type=int, default=None, help="LoRA rank (default: the config's)")
    plan.add_argument("--lora-target-modules", default=None, help="comma-separated modules (default: the config's)")
    plan.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="plan with it on (default: off, turned on only where nothing fits without)",
    )
    plan.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        default=None,
        help="plan QLoRA: the base's linear weights 4-bit NF4 or 8-bit, whole on every GPU (default: the config's)",
    )
    plan.add_argument("--config", default=None, help="a training config (YAML or JSON); the flags here override it")
    plan.set_defaults(func=cmd_plan)


def _add_plan_hardware_arguments(plan: argparse.ArgumentParser) -> None:
    """--gpus and --nodes: the GPUs to plan for."""
    from robolora.memplan import CARD_MEMORY, MAX_GPU_GB, MAX_GPUS_PER_NODE, MAX_NODES

    cards = ", ".join(f"{gib:.1f} for {gb}" for gb, (gib, _) in CARD_MEMORY.items())
    plan.add_argument(
        "--gpus",
        default=None,
        help=f"the GPUs of one node as COUNTxSIZE, 1-{MAX_GPUS_PER_NODE} GPUs of 1-{MAX_GPU_GB} GB: 8x80GB is 8 "
        f"cards sold as 80 GB, each planned with the GiB such a card shows CUDA ({cards}); 8x79.5GiB is taken "
        "as it stands (default: this machine's)",
    )
    plan.add_argument("--nodes", type=int, default=1, help=f"nodes with those GPUs each, 1-{MAX_NODES:,} (default: 1)")
    plan.add_argument(
        "--host-memory",
        default=None,
        help="host memory of each node for what offload moves there, e.g. 256GiB: layouts that need more are "
        "left out (default: this machine's available memory when planning its own GPUs, else unchecked)",
    )


def _add_job_server_arguments(p: argparse.ArgumentParser) -> None:
    """--address and --timeout: how submit and jobs reach the cluster's job server."""
    p.add_argument(
        "--address",
        default=None,
        help="the Ray dashboard URL of the cluster's head, e.g. http://HEAD_IP:8265 "
        "(default: $RAY_API_SERVER_ADDRESS or $RAY_ADDRESS)",
    )
    p.add_argument(
        "--timeout",
        type=int_in(1, MAX_JOBS_TIMEOUT_S),
        default=30,
        help=f"seconds to wait for each answer of the job server before giving up, 1..{MAX_JOBS_TIMEOUT_S} "
        "(default: 30; following logs waits as long as the job runs)",
    )


def _add_submit_command(sub: argparse._SubParsersAction) -> None:
    submit = sub.add_parser(
        "submit",
        help="run a robolora command as a Ray Job on a running cluster and follow its logs",
        description="Run `robolora ARGS...` as a Ray Job on a running cluster: the working directory is uploaded, "
        "the cluster's token (RAY_AUTH_TOKEN or ~/.ray/auth_token) authenticates, and the command's exit follows "
        "the job's (0 SUCCEEDED, 1 FAILED or STOPPED). Example: "
        "robolora submit --address http://HEAD:8265 -- train --config examples/codellama-7b.yaml "
        "--output-dir /mnt/shared/robolora/run-1",
    )
    _add_job_server_arguments(submit)
    submit.add_argument(
        "--working-dir", default=None, help="the directory the job runs in, uploaded (default: the current one)"
    )
    submit.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="an environment variable for the job (repeat)"
    )
    submit.add_argument("--job-id", default=None, help="the job's ID (default: Ray makes one)")
    submit.add_argument("--no-wait", action="store_true", help="print the job's ID and return once it is submitted")
    submit.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the robolora command to run")
    submit.set_defaults(func=cmd_submit)


def _add_jobs_commands(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="status, logs, stop and list of Ray Jobs on a cluster")
    jsub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True, parser_class=Parser)
    for name, text in (
        ("status", "the job's status, entrypoint and message"),
        ("logs", "the job's logs so far"),
        ("stop", "stop the job and wait until it has stopped"),
        ("list", "every job submitted to the cluster"),
    ):
        p = jsub.add_parser(name, help=text)
        if name != "list":
            p.add_argument("job_id", metavar="ID", help="the job's ID (raysubmit_...)")
        if name == "logs":
            p.add_argument(
                "--follow", action="store_true", help="keep printing until the job ends; exit with its status"
            )
        _add_job_server_arguments(p)
        p.set_defaults(func=cmd_jobs)


#: Longest error line printed.
MAX_ERROR_LINE = 1000


#: Exit status when the reader of the output went away (``robolora plan | head``): 128 + SIGPIPE, what a
#: shell reports for a Unix tool that the closed pipe ended.
EXIT_CLOSED_PIPE = 141


def _discard_stdout() -> None:
    """The reader of stdout is gone: send later writes, and the flush at exit, to the null device."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # not a real file (captured output)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _quiet_closed_pipe_in_threads() -> None:
    """A closed pipe met by a helper thread (the training progress bar) ends its output, not the command."""
    default = threading.excepthook
    if getattr(default, "quiet_closed_pipe", False):  # installed by an earlier call
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if issubclass(args.exc_type, BrokenPipeError):
            _discard_stdout()
        else:
            default(args)

    hook.quiet_closed_pipe = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; user errors become ``robolora: error:`` lines and exit code 2; a closed output
    pipe ends it quietly with :data:`EXIT_CLOSED_PIPE`."""
    try:
        _quiet_closed_pipe_in_threads()
        args = build_parser().parse_args(argv)
        code = args.func(args)
        sys.stdout.flush()  # output still buffered meets a closed pipe here, not at interpreter exit
        return code
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_CLOSED_PIPE
    except UserError as e:
        for line in str(e).splitlines():
            if len(line) > MAX_ERROR_LINE:  # a huge value echoed back would bury the message
                line = f"{line[: MAX_ERROR_LINE - 40]}... ({len(line):,} characters in all)"
            print(f"robolora: error: {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("robolora: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
