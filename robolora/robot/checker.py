"""Parse robot code into the program tree without running it, and judge it: syntax and api-valid.

The source is only ever handed to :func:`ast.parse`; the tree is then walked and every node
outside the small grammar of the robot API is rejected. Two levels of error:

* ``syntax``: Python cannot parse it, or it uses a construct outside the grammar (imports,
  assignments, other names, ``while``, non-literal arguments, a loop that is not
  ``for _ in range(N)`` with N an int literal in 1..20, an ``if`` not testing a call).
* ``api``: it is grammatical, but a call is unknown, an argument is positional, unknown,
  duplicated, missing, of the wrong type or out of range.

Every message starts with ``line N: ``.

Example:
    >>> check("robot.move_forward(distance=3)").api_valid
    True
    >>> check("robot.fly(height=2.0)").errors
    ['line 1: unknown call robot.fly']
    >>> canonicalize("robot.move_forward(speed=2, distance=3)")
    'robot.move_forward(distance=3.0, speed=2.0)'
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

from robolora.robot.program import Call, If, Loop, Program, Statement, format_program
from robolora.robot.spec import CALLS, LOOP_MAX, LOOP_MIN

SYNTAX = "syntax"
API = "api"
RUNTIME = "runtime"

_DETECT = "robot.sensors.detect"
_NOT_LITERAL = object()
_REPR_LIMIT = 40

_STATEMENT_ERRORS: dict[type, str] = {
    ast.Import: "imports are not allowed",
    ast.ImportFrom: "imports are not allowed",
    ast.Assign: "assignments are not allowed",
    ast.AugAssign: "assignments are not allowed",
    ast.AnnAssign: "assignments are not allowed",
    ast.While: "while loops are not allowed; repeat with for _ in range(N)",
    ast.Pass: "pass is not allowed",
    ast.FunctionDef: "definitions are not allowed",
    ast.AsyncFunctionDef: "definitions are not allowed",
    ast.ClassDef: "definitions are not allowed",
}

_EXPRESSION_KINDS: dict[type, str] = {
    ast.Name: "a name",
    ast.Attribute: "an attribute",
    ast.Call: "a call",
    ast.JoinedStr: "an f-string",
    ast.BinOp: "an arithmetic expression",
    ast.UnaryOp: "an operator expression",
    ast.BoolOp: "a boolean expression",
    ast.Compare: "a comparison",
    ast.List: "a list",
    ast.Tuple: "a tuple",
    ast.Dict: "a dict",
    ast.Set: "a set",
    ast.Lambda: "a lambda",
    ast.Subscript: "a subscript",
}


class RobotCodeError(ValueError):
    """Robot code that is not valid, or a program the simulator cannot run.

    Attributes:
        line: 1-based source line, or None where there is none (a simulation limit).
        message: what is wrong, without the ``line N: `` prefix that ``str(error)`` carries.
        kind: ``"syntax"``, ``"api"`` or ``"runtime"`` (raised by the simulator).
    """

    def __init__(self, message: str, line: int | None = None, kind: str = SYNTAX):
        self.message = message
        self.line = line
        self.kind = kind
        super().__init__(message if line is None else f"line {line}: {message}")


@dataclass
class CheckResult:
    """The verdict on one piece of code; ``program`` is set only when it is api-valid."""

    syntax_ok: bool
    api_valid: bool
    errors: list[str]
    program: Program | None


def _dotted_name(node: ast.expr) -> str | None:
    """``robot.gripper.pick_up`` for a chain of attributes on a plain name, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _literal(node: ast.expr) -> object:
    """The value of a constant or a negated number, else ``_NOT_LITERAL``."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        value = node.operand.value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    return _NOT_LITERAL


def _describe(node: ast.expr) -> str:
    if isinstance(node, ast.Constant):
        return f"the literal {_short_repr(node.value)}"
    if isinstance(node, ast.Name):
        return f"the name {_clip(node.id)}"
    return _EXPRESSION_KINDS.get(type(node), "an expression")


def _clip(text: str) -> str:
    """Keep messages short whatever the input: names and values come from untrusted text."""
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def _short_repr(value: object) -> str:
    return _clip(repr(value))


def _call_problems(name: str, kwargs: Mapping[str, object], given: Collection[str]) -> Iterator[tuple[str | None, str]]:
    """``(argument or None, message)`` for each way a call is not api-valid.

    ``given`` names every argument written, ``kwargs`` the values of those that are literals.
    """
    spec = CALLS.get(name)
    if spec is None:
        yield None, f"unknown call {_clip(name)}"
        return
    for arg in given:
        if arg not in spec.by_name:
            yield arg, f"{name}: unknown argument {_clip(arg)}"
    for param in spec.params:
        if param.name not in given:
            if param.required:
                yield None, f"{name}: missing required argument {param.name}"
        elif param.name in kwargs:
            reason = param.validate(kwargs[param.name])
            if reason:
                yield param.name, f"{name}: {param.name}={_short_repr(kwargs[param.name])} {reason}"


def _normalised(name: str, kwargs: Mapping[str, object]) -> Call:
    """A valid call with its arguments in table order (so keyword order never matters) and floats as float."""
    ordered: dict[str, object] = {}
    for param in CALLS[name].params:
        if param.name in kwargs:
            value = kwargs[param.name]
            ordered[param.name] = float(value) if param.type is float else value  # type: ignore[arg-type]
    return Call(name, ordered)


def _block_problems(block: tuple[Statement, ...], what: str) -> list[str]:
    problems = [] if block else [f"empty {what}"]
    for stmt in block:
        if isinstance(stmt, Loop):
            count = stmt.count
            if isinstance(count, bool) or not isinstance(count, int) or not LOOP_MIN <= count <= LOOP_MAX:
                problems.append(f"loop count must be an int in {LOOP_MIN}..{LOOP_MAX}, got {_short_repr(count)}")
            problems += _block_problems(stmt.body, "loop body")
        elif isinstance(stmt, If):
            if stmt.test.name != _DETECT:
                problems.append(f"if conditions must be {_DETECT}, not {_clip(stmt.test.name)}")
            problems += [message for _, message in _call_problems(stmt.test.name, stmt.test.kwargs, stmt.test.kwargs)]
            problems += _block_problems(stmt.body, "if body")
            problems += _block_problems(stmt.orelse, "else body") if stmt.orelse else []
        else:
            problems += [message for _, message in _call_problems(stmt.name, stmt.kwargs, stmt.kwargs)]
    return problems


def validate_program(program: Program) -> list[str]:
    """Why a program built in code (rather than parsed) is not api-valid; empty when it is.

    The generator can assert its output with this; the messages carry no line.
    """
    return _block_problems(program, "program")


class _TreeBuilder:
    """Walks the module, building the program and collecting every error it can find.

    A statement with a syntax error is dropped and the walk goes on, so one pass reports
    the problems of all lines; the program is only used when no error was found.
    """

    def __init__(self) -> None:
        self.errors: list[RobotCodeError] = []

    def fail(self, node: ast.AST, kind: str, message: str) -> None:
        self.errors.append(RobotCodeError(message, getattr(node, "lineno", 1), kind))

    def block(self, statements: list[ast.stmt]) -> tuple[Statement, ...]:
        built = (self.statement(node) for node in statements)
        return tuple(stmt for stmt in built if stmt is not None)

    def statement(self, node: ast.stmt) -> Statement | None:
        if isinstance(node, ast.Expr):
            return self.expression_statement(node.value)
        if isinstance(node, ast.For):
            return self.loop(node)
        if isinstance(node, ast.If):
            return self.branch(node)
        message = _STATEMENT_ERRORS.get(type(node), f"{type(node).__name__} statements are not allowed")
        self.fail(node, SYNTAX, message)
        return None

    def expression_statement(self, node: ast.expr) -> Call | None:
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Constant):
            self.fail(node, SYNTAX, "bare literals are not allowed; write robot API calls")
        elif isinstance(node, ast.Attribute):
            self.fail(node, SYNTAX, "attribute access outside a call is not allowed")
        else:
            self.fail(node, SYNTAX, f"{_describe(node)} is not allowed as a statement; write robot API calls")
        return None

    def call(self, node: ast.Call) -> Call | None:
        dotted = _dotted_name(node.func)
        if dotted is None:
            self.fail(node, SYNTAX, "only direct robot.* calls are allowed, not calls of computed expressions")
            return None
        name = _clip(dotted)
        if name != "robot" and not name.startswith("robot."):
            self.fail(node, SYNTAX, f"{name} is not a robot API call; only robot.* calls are allowed")
            return None
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            self.fail(node, SYNTAX, f"{name}: *args are not allowed")
        elif node.args:
            self.fail(node, API, f"{name}: positional arguments are not allowed; pass every argument by keyword")
        given: dict[str, ast.keyword] = {}
        kwargs: dict[str, object] = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                self.fail(keyword, SYNTAX, f"{name}: **kwargs are not allowed")
            elif keyword.arg in given:
                self.fail(keyword, API, f"{name}: duplicate argument {_clip(keyword.arg)}")
            else:
                given[keyword.arg] = keyword
                value = _literal(keyword.value)
                if value is _NOT_LITERAL:
                    what = _describe(keyword.value)
                    self.fail(keyword, SYNTAX, f"{name}: {_clip(keyword.arg)} must be a literal, not {what}")
                else:
                    kwargs[keyword.arg] = value
        problems = list(_call_problems(dotted, kwargs, given))
        for arg, message in problems:
            self.fail(given[arg] if arg else node, API, message)
        return Call(dotted, kwargs) if problems else _normalised(dotted, kwargs)

    def loop(self, node: ast.For) -> Loop | None:
        count = self.loop_count(node)
        if node.orelse:
            self.fail(node, SYNTAX, "for ... else is not allowed")
        body = self.block(node.body)
        return Loop(count, body) if count is not None else None

    def loop_count(self, node: ast.For) -> int | None:
        rng = node.iter
        if not (
            isinstance(node.target, ast.Name)
            and node.target.id == "_"
            and isinstance(rng, ast.Call)
            and isinstance(rng.func, ast.Name)
            and rng.func.id == "range"
            and len(rng.args) == 1
            and not rng.keywords
        ):
            self.fail(node, SYNTAX, "loops must be written for _ in range(N):")
            return None
        count = _literal(rng.args[0])
        if not isinstance(count, int) or isinstance(count, bool):
            self.fail(node, SYNTAX, f"loop count must be an int literal, not {_describe(rng.args[0])}")
            return None
        if not LOOP_MIN <= count <= LOOP_MAX:
            self.fail(node, SYNTAX, f"loop count must be in {LOOP_MIN}..{LOOP_MAX}, got {count}")
            return None
        return count

    def branch(self, node: ast.If) -> If | None:
        test = None
        if isinstance(node.test, ast.Call):
            test = self.call(node.test)
        else:
            self.fail(node, SYNTAX, f"if conditions must be a {_DETECT}(...) call, not {_describe(node.test)}")
        if test is not None and test.name in CALLS and not CALLS[test.name].returns_bool:
            self.fail(node, API, f"{test.name} does not return a bool; conditions use {_DETECT}")
        body = self.block(node.body)
        orelse = self.block(node.orelse)
        return If(test, body, orelse) if test is not None else None


def _syntax_error_line(exc: SyntaxError, code: str) -> int:
    # Python gives no line for a null byte; point at the first one.
    if exc.lineno:
        return exc.lineno
    return code.count("\n", 0, code.find("\0")) + 1 if "\0" in code else 1


def _parse(code: str) -> tuple[Program, list[RobotCodeError]]:
    """The program and every error found; the program is meaningful only without errors."""
    try:
        with warnings.catch_warnings():
            # Invalid escapes and the like only warn; they must neither print nor, under -W error, raise.
            warnings.simplefilter("ignore")
            tree = ast.parse(code)
    except SyntaxError as exc:
        return (), [RobotCodeError(exc.msg, _syntax_error_line(exc, code))]
    except ValueError as exc:  # null bytes, on Pythons before 3.11.4
        return (), [RobotCodeError(str(exc), 1)]
    except (MemoryError, RecursionError):  # how the parser reports very deep nesting
        return (), [RobotCodeError("program is too deeply nested or too large to parse", 1)]
    if not tree.body:
        return (), [RobotCodeError("empty program", 1)]
    builder = _TreeBuilder()
    try:
        program = builder.block(tree.body)
    except RecursionError:
        return (), [RobotCodeError("program is too deeply nested", 1)]
    # Arguments are checked in table order; report in source order.
    return program, sorted(builder.errors, key=lambda e: e.line or 0)


def parse_program(code: str) -> Program:
    """Parse robot code into a program, never running it.

    Raises:
        RobotCodeError: the first syntax error if there is one, else the first api error.
    """
    program, errors = _parse(code)
    if errors:
        raise next((e for e in errors if e.kind == SYNTAX), errors[0])
    return program


def check(code: str) -> CheckResult:
    """Judge code for syntax and api validity; never raises, whatever the string.

    ``errors`` lists every problem found, in source order, each as ``line N: message``.
    """
    program, errors = _parse(code)
    syntax_ok = all(e.kind != SYNTAX for e in errors)
    valid = not errors
    return CheckResult(syntax_ok, valid, [str(e) for e in errors], program if valid else None)


def canonicalize(code: str) -> str:
    """The canonical text of valid robot code (defaults written out, table order, floats to 2 places).

    Raises:
        RobotCodeError: the code is not api-valid.
    """
    return format_program(parse_program(code))
