"""What a run's loss curve says, in the training guide's terms, with remedies as this project's flags.

The guide's "Expected Results" give the thresholds (final loss < 0.5 good, < 0.2 excellent, validation
gap < 0.3), its "Loss Patterns" the patterns (overfitting, underfitting, instability) and its
"Troubleshooting" the remedies. :func:`diagnose` reads the metric rows of ``metrics.jsonl`` and returns
one verdict. Pure Python (no torch), so the CLI can diagnose a run on any machine.

Example:
    >>> rows = [{"step": s, "train_loss": loss} for s, loss in [(10, 2.0), (20, 1.0), (30, 0.45)]]
    >>> rows.append({"step": 30, "eval_loss": 0.48})
    >>> d = diagnose(rows)
    >>> d.verdict, d.final_eval_loss, round(d.gap, 2)
    ('good', 0.48, 0.03)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from robolora.config import ALL_LINEAR_MODULES, flag

GOOD_LOSS = 0.5  # "Good Training: Final loss < 0.5"
EXCELLENT_LOSS = 0.2  # "Excellent Training: Final loss < 0.2"
MAX_VAL_GAP = 0.3  # "Validation Gap: < 0.3 difference from training loss"
# Logged losses are rounded decimals: 0.5 - 0.2 must read as a gap of 0.3, not 0.30000000000000004.
_TOL = 1e-9

# Underfitting, "both losses plateau at high values": over the last third of the logged train losses
# the loss fell by less than 5% of its value. A third spans enough logging events to look past one
# noisy value yet describes where the run is now, not its steep start; a run that is still learning
# falls far more than 5% there (the guide's example: about 30% per 100 steps).
PLATEAU_WINDOW = 1 / 3
MIN_IMPROVEMENT = 0.05

# Instability, "erratic loss fluctuations": a spike is a logged train loss more than 50% above the
# one logged before it and at least 0.1 higher (near zero loss, 0.02 -> 0.04 is noise, not a jump).
# One spike can be a single hard batch the run recovers from; two or more mean the updates are too
# large. In a long run logged every step they must also be at least 5% of the intervals, since rare
# jumps among thousands of values are batch noise.
SPIKE_RATIO = 1.5
SPIKE_MIN_RISE = 0.1
MIN_SPIKES = 2
SPIKE_SHARE = 0.05

# Overfitting beyond the final gap: the eval loss ended more than 10% above its best while the train
# loss kept falling. The validation set is fixed, so between nearby checkpoints its loss wobbles by a
# few percent; a 10% rise is a trend, and an earlier checkpoint was the better model.
EVAL_RISE = 0.10

MIN_POINTS = 3  # fewer train losses than this show no trend

Series = list[tuple[int, float]]  # (optimizer step, loss)
Check = tuple[list[str], list[str]]  # (findings, remedies); no findings: the pattern is absent


@dataclass
class Diagnosis:
    """One verdict on a run, the numbers behind it, and what to change.

    ``verdict`` is one of excellent, good, overfitting, underfitting, instability or too short.
    """

    verdict: str
    final_train_loss: float | None
    final_eval_loss: float | None
    best_eval_loss: float | None
    best_eval_step: int | None
    gap: float | None  # final eval - final train
    findings: list[str] = field(default_factory=list)
    remedies: list[str] = field(default_factory=list)

    def text(self) -> str:
        """A short multi-line summary for the terminal."""
        numbers = [f"final train loss {fmt_loss(self.final_train_loss)}"]
        if self.final_eval_loss is not None:
            numbers += [
                f"final eval loss {fmt_loss(self.final_eval_loss)}",
                f"best eval loss {fmt_loss(self.best_eval_loss)} at step {self.best_eval_step}",
                f"gap {fmt_loss(self.gap)}",
            ]
        lines = [f"Diagnosis: {self.verdict} ({', '.join(numbers)})"]
        lines += [f"  - {f}" for f in self.findings]
        if self.remedies:
            lines.append("Remedies:")
            lines += [f"  - {r}" for r in self.remedies]
        return "\n".join(lines)


def fmt_loss(x: float | None) -> str:
    """A loss for people: three significant digits, ``n/a`` when there is none."""
    return "n/a" if x is None else f"{x:.3g}"


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _flag(cfg: dict, name: str, to: Any = None, times: float | None = None) -> str:
    """``--flag VALUE (now CURRENT)``: the value to try (``to``, or the current one ``times`` a factor)."""
    now = cfg.get(name)
    if times is not None and isinstance(now, (int, float)) and now:
        to = type(now)(now * times)  # an int flag such as --lora-r stays an int
    text = flag(name) if to is None else f"{flag(name)} {_num(to)}"
    return f"{text} (now {_num(now)})" if name in cfg else text


def series(rows: list[dict], key: str) -> Series:
    """The ``(step, value)`` pairs of the rows that logged ``key``, in order."""
    return [(row["step"], float(row[key])) for row in rows if row.get(key) is not None]


def _steady_remedies(cfg: dict) -> list[str]:
    """The remedies for a loss that jumps or diverges: smaller, smoother updates."""
    remedies = [
        f"lower the learning rate: {_flag(cfg, 'learning_rate', times=0.5)}",
        f"warm up for longer: {_flag(cfg, 'warmup_ratio', to=0.2)}",
        f"average over a larger global batch: {_flag(cfg, 'gradient_accumulation_steps', times=2)}",
    ]
    if not cfg.get("max_grad_norm"):
        remedies.append(f"clip gradients: {_flag(cfg, 'max_grad_norm', to=1.0)}")
    return remedies


def _spikes(train: Series, cfg: dict) -> Check:
    spikes = [(a, b, s) for (_, a), (s, b) in pairwise(train) if b > a * SPIKE_RATIO and b - a >= SPIKE_MIN_RISE]
    if len(spikes) < max(MIN_SPIKES, SPIKE_SHARE * (len(train) - 1)):
        return [], []
    shown = ", ".join(f"{fmt_loss(a)} -> {fmt_loss(b)} at step {s}" for a, b, s in spikes[:3])
    return [
        f"The train loss jumped by more than {SPIKE_RATIO - 1:.0%} between consecutive logged values "
        f"{len(spikes)} times ({shown}): the updates are too large."
    ], _steady_remedies(cfg)


def _overfitting(train: Series, evals: Series, best: tuple[int, float], cfg: dict) -> Check:
    if not evals:
        return [], []
    findings = []
    (_, final_train), (_, final_eval), (best_step, best_loss) = train[-1], evals[-1], best
    if final_eval - final_train > MAX_VAL_GAP + _TOL:
        findings.append(
            f"The final eval loss {fmt_loss(final_eval)} is {fmt_loss(final_eval - final_train)} above the final train "
            f"loss {fmt_loss(final_train)}, more than {MAX_VAL_GAP}: the model memorises the training data."
        )
    # The train loss when the eval loss was best: the last one logged at or before that step.
    train_then = next((v for s, v in reversed(train) if s <= best_step), train[0][1])
    if final_eval > best_loss * (1 + EVAL_RISE) and final_train < train_then:
        findings.append(
            f"The eval loss rose {final_eval / best_loss - 1:.0%} from its best {fmt_loss(best_loss)} at step "
            f"{best_step} to {fmt_loss(final_eval)} while the train loss kept falling to {fmt_loss(final_train)}."
        )
    if not findings:
        return [], []
    return findings, [
        f"stop when the eval loss stops improving: {_flag(cfg, 'early_stopping_patience', to=3)}",
        f"lower the learning rate: {_flag(cfg, 'learning_rate', times=0.5)}",
        f"train fewer epochs: {_flag(cfg, 'num_epochs')}; the eval loss was best at step {best_step}",
        f"regularise more: {_flag(cfg, 'lora_dropout', times=2)} or {_flag(cfg, 'weight_decay', to=0.01)}",
        "add more training and validation data (more varied commands per category)",
    ]


def _underfitting(train: Series, headline: tuple[str, float], cfg: dict) -> Check:
    kind, loss = headline
    if loss < GOOD_LOSS:
        return [], []
    window = train[-max(2, math.ceil(len(train) * PLATEAU_WINDOW)) :]
    (first_step, first), (last_step, last) = window[0], window[-1]
    improvement = (first - last) / first if first > 0 else 0.0
    high = f"The final {kind} loss {fmt_loss(loss)} is not below {GOOD_LOSS}"
    more_data = "add more training data, and check it for repeated or wrong examples (`robolora data validate`)"
    if improvement < MIN_IMPROVEMENT:
        return [
            f"{high}, and the train loss has plateaued: from {fmt_loss(first)} at step {first_step} to "
            f"{fmt_loss(last)} at step {last_step}, {improvement:.1%} better (less than {MIN_IMPROVEMENT:.0%})."
        ], [
            f"raise the learning rate: {_flag(cfg, 'learning_rate', times=2)}",
            f"give LoRA more capacity: {_flag(cfg, 'lora_r', times=2)} {_flag(cfg, 'lora_alpha', times=2)}, "
            f"or adapt every linear layer: --lora-target-modules {ALL_LINEAR_MODULES}",
            # More capacity costs activation and optimizer memory; these keep the run inside it.
            f"if memory runs short, add --gradient-checkpointing or lower {_flag(cfg, 'batch_size')} "
            "and raise --gradient-accumulation-steps to keep the global batch",
            more_data,
        ]
    capped = cfg.get("max_steps", -1) != -1
    return [
        f"{high}, but the train loss is still falling ({improvement:.0%} over the last {len(window)} logged "
        "values): the run needs more training."
    ], [
        f"train for more epochs: {_flag(cfg, 'num_epochs', times=2)}"
        + (f" and raise or remove {_flag(cfg, 'max_steps')}, which ends the run early" if capped else ""),
        more_data,
    ]


def diagnose(rows: list[dict], config: dict | None = None) -> Diagnosis:
    """Judge a run from its metric rows (``metrics.jsonl``) by the training guide's measures.

    Precedence when several patterns apply: instability > overfitting > underfitting > excellent/good.
    The final eval loss (the final train loss, without evaluations) decides good and excellent.

    Args:
        rows: one dict per logging event with ``step`` and ``train_loss`` and/or ``eval_loss``.
        config: ``TrainConfig.to_dict()`` of the run, to name current values in the remedies.

    Example:
        >>> d = diagnose([{"step": s, "train_loss": 1.8} for s in (10, 20, 30, 40)], {"learning_rate": 1e-4})
        >>> d.verdict, d.remedies[0]
        ('underfitting', 'raise the learning rate: --learning-rate 0.0002 (now 0.0001)')
    """
    cfg = config or {}
    train, evals = series(rows, "train_loss"), series(rows, "eval_loss")
    final_train = train[-1][1] if train else None
    final_eval = evals[-1][1] if evals else None
    finite_evals = [p for p in evals if math.isfinite(p[1])]
    best_step, best = min(finite_evals, key=lambda p: p[1]) if finite_evals else (None, None)
    gap = final_eval - final_train if final_eval is not None and final_train is not None else None

    def result(verdict: str, findings: list[str], remedies: list[str]) -> Diagnosis:
        return Diagnosis(verdict, final_train, final_eval, best, best_step, gap, findings, remedies)

    # A non-finite loss is conclusive however short the run: the weights are already ruined.
    broken = [(kind, s, v) for kind, ser in (("train", train), ("eval", evals)) for s, v in ser if not math.isfinite(v)]
    if broken:
        kind, step, value = broken[0]
        return result(
            "instability",
            [f"The {kind} loss became {value} at step {step}: training diverged."],
            [*_steady_remedies(cfg), "check the data for empty or extremely long responses"],
        )
    if len(train) < MIN_POINTS:
        return result(
            "too short",
            [f"Only {len(train)} train loss values were logged; at least {MIN_POINTS} are needed to see a trend."],
            [f"log more often: lower {_flag(cfg, 'logging_steps')}, or train longer: raise {_flag(cfg, 'num_epochs')}"],
        )

    headline = ("eval", final_eval) if evals else ("train", final_train)
    no_eval = (
        []
        if evals
        else [f"No eval loss was logged, so overfitting cannot be judged: lower {_flag(cfg, 'eval_steps')}."]
    )
    checks = {
        "instability": _spikes(train, cfg),
        "overfitting": _overfitting(train, evals, (best_step, best), cfg),
        "underfitting": _underfitting(train, headline, cfg),
    }
    for verdict, (findings, remedies) in checks.items():  # in order of precedence
        if findings:
            return result(verdict, findings + no_eval, remedies)

    kind, loss = headline
    verdict, bound = ("excellent", EXCELLENT_LOSS) if loss < EXCELLENT_LOSS else ("good", GOOD_LOSS)
    findings = [f"The final {kind} loss {fmt_loss(loss)} is below {bound}: {verdict} by the guide's measure."]
    if gap is not None:
        findings.append(f"The eval loss is within {MAX_VAL_GAP} of the train loss (gap {fmt_loss(gap)}).")
    return result(verdict, findings + no_eval, [])
