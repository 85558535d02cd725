"""The robot API: its call table, the program tree, the checker, the simulator and the judges.

Nothing here imports torch; it is safe to use from data tools and the CLI.
"""

from robolora.robot.checker import CheckResult, RobotCodeError, canonicalize, check, parse_program, validate_program
from robolora.robot.program import Call, If, Loop, Program, format_call, format_program
from robolora.robot.simulator import (
    DEFAULT_WORLDS,
    EMPTY_WORLD,
    RobotState,
    SimResult,
    World,
    exact_match,
    run,
    semantic_equal,
    simulate,
    traces_equal,
    worlds_for,
)
from robolora.robot.spec import CALLS, CATEGORIES, COLORS, LOCATIONS, SIZES

__all__ = [
    "CALLS",
    "CATEGORIES",
    "COLORS",
    "DEFAULT_WORLDS",
    "EMPTY_WORLD",
    "LOCATIONS",
    "SIZES",
    "Call",
    "CheckResult",
    "If",
    "Loop",
    "Program",
    "RobotCodeError",
    "RobotState",
    "SimResult",
    "World",
    "canonicalize",
    "check",
    "exact_match",
    "format_call",
    "format_program",
    "parse_program",
    "run",
    "semantic_equal",
    "simulate",
    "traces_equal",
    "validate_program",
    "worlds_for",
]
