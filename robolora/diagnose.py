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
import statistics
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

from robolora.config import ALL_LINEAR_MODULES, flag

GOOD_LOSS = 0.5  # "Good Training: Final loss < 0.5"
EXCELLENT_LOSS = 0.2  # "Excellent Training: Final loss < 0.2"
MAX_VAL_GAP = 0.3  # "Validation Gap: < 0.3 difference from training loss"
# Logged losses are rounded decimals: 0.5 - 0.2 must read as a gap of 0.3, not 0.30000000000000004.
_TOL = 1e-9

# The trend of the train loss is judged where the run is now, not at its steep start: over the last
# third of the logged train losses (at least MIN_TREND_POINTS of them), on a line fitted through all
# of them by the median of their pairwise slopes (Theil-Sen), which a few noisy values (a hard batch,
# a batch of long examples) barely move, where two raw end points can say anything.
# Underfitting, "both losses plateau at high values": along that line the loss fell by less than 5%;
# a run that is still learning falls far more than 5% there (the guide's example: about 30% per 100
# steps). A rise of more than 5% (and more than 0.02, as near zero 0.02 -> 0.04 is noise) that is
# also more than twice what the values' scatter around the line could make is a rising loss, never a
# plateau: the updates are too large.
PLATEAU_WINDOW = 1 / 3
MIN_IMPROVEMENT = 0.05
MIN_RISE = 0.05
MIN_RISE_ABS = 0.02
MIN_TREND_POINTS = 6
#: Longer windows are first smoothed into this many medians of consecutive values (pairwise slopes
#: grow with the square of the points).
TREND_BINS = 200

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


@dataclass(frozen=True)
class Trend:
    """Where the train loss is heading at the end of a run: a robust line through its last logged values."""

    kind: str  # falling, flat or rising
    start: float  # the line's loss at the window's first step
    end: float  # and at its last step
    steps: tuple[int, int]
    points: int  # logged values in the window
    noise: float  # how far the end could stray from the start by the values' scatter alone (2 standard errors)

    @property
    def change(self) -> float:
        """Relative change along the line, negative when the loss fell."""
        return (self.end - self.start) / self.start if self.start > 0 else 0.0

    def describe(self) -> str:
        return (
            f"over the last {self.points} logged values (steps {self.steps[0]}-{self.steps[1]}) its trend went "
            f"from {fmt_loss(self.start)} to {fmt_loss(self.end)}, {self.change:+.1%}"
        )


def _binned(window: Series, bins: int) -> Series:
    """At most ``bins`` points: the median step and loss of each run of consecutive values."""
    size = math.ceil(len(window) / bins)
    if size == 1:
        return window
    chunks = [window[i : i + size] for i in range(0, len(window), size)]
    return [(int(statistics.median(s for s, _ in c)), statistics.median(v for _, v in c)) for c in chunks]


def loss_trend(train: Series) -> Trend | None:
    """The trend of the last third of ``train`` (at least :data:`MIN_TREND_POINTS` values) along its
    Theil-Sen line; None when fewer values were logged, too few to tell a trend.

    >>> loss_trend([(s, v) for s, v in enumerate([2.0, 1.6, 1.5, 1.52, 1.45, 1.49, 1.51, 1.38, 1.51], 1)]).kind
    'flat'
    >>> loss_trend([(s, v) for s, v in enumerate([1.3, 1.4, 1.35, 1.45, 1.5, 1.55], 1)]).kind
    'rising'
    >>> loss_trend([(1, 1.0), (2, 0.9)]) is None
    True
    """
    if len(train) < MIN_TREND_POINTS:
        return None
    window = train[-max(MIN_TREND_POINTS, math.ceil(len(train) * PLATEAU_WINDOW)) :]
    points = _binned(window, TREND_BINS)
    xs, ys = [s for s, _ in points], [v for _, v in points]
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i]
    ]
    slope = statistics.median(slopes) if slopes else 0.0
    intercept = statistics.median(y - slope * x for x, y in points)
    # The scatter around the line (a robust standard deviation), and the standard error it gives the
    # line's rise from the first step to the last, as for a least-squares line.
    sigma = 1.4826 * statistics.median(abs(y - intercept - slope * x) for x, y in points)
    mean_x = statistics.fmean(xs)
    spread = math.sqrt(sum((x - mean_x) ** 2 for x in xs))
    span = xs[-1] - xs[0]
    trend = Trend(
        "flat",
        intercept + slope * xs[0],
        intercept + slope * xs[-1],
        (window[0][0], window[-1][0]),
        len(window),
        2 * sigma * span / spread if spread else 0.0,
    )
    rise = trend.end - trend.start
    if trend.change < -MIN_IMPROVEMENT:
        return replace(trend, kind="falling")
    if trend.change > MIN_RISE and rise > max(MIN_RISE_ABS, trend.noise):
        return replace(trend, kind="rising")
    return trend


def _log_more(cfg: dict) -> list[str]:
    """The remedy "log more often", where the run did not already log every step.

    >>> _log_more({"logging_steps": 50}), _log_more({"logging_steps": 1})
    (['log more often to see the trend: lower --logging-steps (now 50)'], [])
    """
    if cfg.get("logging_steps", 2) <= 1:
        return []
    return [f"log more often to see the trend: lower {_flag(cfg, 'logging_steps')}"]


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


def _rising(trend: Trend | None, cfg: dict) -> Check:
    if trend is None or trend.kind != "rising":
        return [], []
    return [f"The train loss is rising: {trend.describe()}: the updates are too large."], _steady_remedies(cfg)


def _cut_short(rows: list[dict], cfg: dict) -> str | None:
    """How --max-steps ended the run before the epochs it asks for; None where it did not."""
    max_steps, planned = cfg.get("max_steps"), cfg.get("num_epochs")
    if not isinstance(max_steps, int) or max_steps <= 0:
        return None
    epochs = [r["epoch"] for r in rows if isinstance(r.get("epoch"), (int, float))]
    if epochs and isinstance(planned, (int, float)) and epochs[-1] >= planned - 1e-6:
        return None  # it ran its epochs, or more
    done = f" after {epochs[-1]:.3g} epochs" if epochs else ""
    of = f" of the {planned:g} that {flag('num_epochs')} asks for" if epochs and planned else ""
    return f"{flag('max_steps')} {max_steps} ended the run{done}{of}"


def _length(cfg: dict) -> str:
    """The field that sets a run's length: max_steps where it is given, else num_epochs."""
    return "max_steps" if isinstance(cfg.get("max_steps"), int) and cfg["max_steps"] > 0 else "num_epochs"


def _train_longer(cfg: dict) -> str:
    """The remedy that lengthens a run: --max-steps where it sets the length, else --num-epochs."""
    if _length(cfg) == "max_steps":
        return (
            f"train longer: {_flag(cfg, 'max_steps', times=2)}, which overrides {flag('num_epochs')}, or remove it "
            f"to run {_flag(cfg, 'num_epochs')}"
        )
    return f"train for more epochs: {_flag(cfg, 'num_epochs', times=2)}"


def _underfitting(train: Series, trend: Trend | None, headline: tuple[str, float], cfg: dict, cut: str | None) -> Check:
    kind, loss = headline
    if loss < GOOD_LOSS:
        return [], []
    high = f"The final {kind} loss {fmt_loss(loss)} is not below {GOOD_LOSS}"
    more_data = "add more training data, and check it for repeated or wrong examples (`robolora data validate`)"
    if trend is None:
        return [
            f"{high}; only {len(train)} train loss values were logged, too few to tell a plateau from a slow fall "
            f"(at least {MIN_TREND_POINTS} are needed)."
        ], [*_log_more(cfg), _train_longer(cfg), more_data]
    if trend.kind == "falling":
        return [f"{high}, but the train loss is still falling: {trend.describe()}: the run needs more training."], [
            _train_longer(cfg),
            more_data,
        ]
    # Flat. A rising loss is instability, judged before this; a rise no larger than the scatter of the
    # values is neither called a plateau nor taken as a reason for a higher learning rate.
    uncertain_rise = trend.change > MIN_RISE
    if uncertain_rise:
        findings = [
            f"{high}, and the train loss is not falling: {trend.describe()}, a rise no larger than the "
            "scatter of the logged values."
        ]
    else:
        findings = [f"{high}, and the train loss has plateaued: {trend.describe()} (within {MIN_IMPROVEMENT:.0%})."]
    capacity = [
        f"give LoRA more capacity: {_flag(cfg, 'lora_r', times=2)} {_flag(cfg, 'lora_alpha', times=2)}, "
        f"or adapt every linear layer: --lora-target-modules {ALL_LINEAR_MODULES}",
        # More capacity costs activation and optimizer memory; these keep the run inside it.
        f"if memory runs short, add --gradient-checkpointing or lower {_flag(cfg, 'batch_size')} "
        "and raise --gradient-accumulation-steps to keep the global batch",
        more_data,
    ]
    if cut:
        # The schedule decays to zero over the shortened run: its end says little about the learning rate.
        findings.append(f"{cut}; its learning rate schedule ran over those steps alone.")
        return findings, [f"first {_train_longer(cfg)}", *capacity]
    if uncertain_rise:
        return findings, [*_log_more(cfg), *capacity]
    return findings, [f"raise the learning rate: {_flag(cfg, 'learning_rate', times=2)}", *capacity]


def diagnose(rows: list[dict], config: dict | None = None) -> Diagnosis:
    """Judge a run from its metric rows (``metrics.jsonl``) by the training guide's measures.

    Precedence when several patterns apply: instability > overfitting > underfitting > excellent/good.
    The final eval loss (the final train loss, without evaluations) decides good and excellent.

    Args:
        rows: one dict per logging event with ``step`` and ``train_loss`` and/or ``eval_loss``.
        config: ``TrainConfig.to_dict()`` of the run, to name current values in the remedies.

    Example:
        >>> d = diagnose([{"step": s, "train_loss": 1.8} for s in range(10, 70, 10)], {"learning_rate": 1e-4})
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
    early = {"instability": _diverged(train, evals, cfg), "too short": _too_short(train, cfg)}
    for verdict, (findings, remedies) in early.items():  # in order of precedence
        if findings:
            return result(verdict, findings, remedies)

    headline = ("eval", final_eval) if evals else ("train", final_train)
    no_eval = (
        []
        if evals
        else [f"No eval loss was logged, so overfitting cannot be judged: lower {_flag(cfg, 'eval_steps')}."]
    )
    for verdict, (findings, remedies) in _patterns(rows, train, evals, (best_step, best), headline, cfg).items():
        if findings:  # in order of precedence
            return result(verdict, findings + no_eval, remedies)
    verdict, findings = _passed(headline, gap)
    return result(verdict, findings + no_eval, [])


def _diverged(train: Series, evals: Series, cfg: dict) -> Check:
    """The first non-finite train or eval loss: training diverged."""
    broken = [(kind, s, v) for kind, ser in (("train", train), ("eval", evals)) for s, v in ser if not math.isfinite(v)]
    if not broken:
        return [], []
    kind, step, value = broken[0]
    return [f"The {kind} loss became {value} at step {step}: training diverged."], [
        *_steady_remedies(cfg),
        "check the data for empty or extremely long responses",
    ]


def _too_short(train: Series, cfg: dict) -> Check:
    """Fewer than :data:`MIN_POINTS` train losses: too few to judge anything by."""
    if len(train) >= MIN_POINTS:
        return [], []
    return [f"Only {len(train)} train loss values were logged; at least {MIN_POINTS} are needed to see a trend."], [
        (f"log more often: lower {_flag(cfg, 'logging_steps')}, or " if cfg.get("logging_steps", 2) > 1 else "")
        + f"train longer: raise {_flag(cfg, _length(cfg))}"
    ]


def _patterns(
    rows: list[dict],
    train: Series,
    evals: Series,
    best: tuple[int | None, float | None],
    headline: tuple[str, float],
    cfg: dict,
) -> dict[str, Check]:
    """The guide's loss patterns by verdict, in order of precedence; a pattern without findings is absent."""
    trend = loss_trend(train)
    spikes = _spikes(train, cfg)
    return {
        "instability": spikes if spikes[0] else _rising(trend, cfg),
        "overfitting": _overfitting(train, evals, best, cfg),
        "underfitting": _underfitting(train, trend, headline, cfg, _cut_short(rows, cfg)),
    }


def _passed(headline: tuple[str, float], gap: float | None) -> tuple[str, list[str]]:
    """The verdict (excellent or good) and findings of a run no pattern matched, by its headline loss."""
    kind, loss = headline
    verdict, bound = ("excellent", EXCELLENT_LOSS) if loss < EXCELLENT_LOSS else ("good", GOOD_LOSS)
    findings = [f"The final {kind} loss {fmt_loss(loss)} is below {bound}: {verdict} by the guide's measure."]
    if gap is not None:
        findings.append(f"The eval loss is within {MAX_VAL_GAP} of the train loss (gap {fmt_loss(gap)}).")
    return verdict, findings
