"""Errors a user can fix: the CLI prints them as one line and exits non-zero, without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (a flag, a config file, a dataset, a path): the message says what and how to fix it."""

    exit_code = 2

    def prefixed(self, prefix: str) -> UserError:
        """The same error with ``prefix`` before its message (naming the variant or stage it came from)."""
        error = type(self).__new__(type(self))
        Exception.__init__(error, prefix + str(self))
        return error


class ConfigError(UserError):
    """A flag or config file key is unknown, mistyped, out of range or contradicts another."""


class DataError(UserError):
    """A dataset file has problems; ``problems`` holds one ``file: record N: field: message`` line each."""

    def __init__(self, problems: list[str], limit: int = 20):
        self.problems, self.limit = problems, limit
        shown = problems[:limit]
        more = f"\n... and {len(problems) - limit} more" if len(problems) > limit else ""
        super().__init__("\n".join(shown) + more)

    def prefixed(self, prefix: str) -> DataError:
        return DataError([prefix + p for p in self.problems], self.limit)

    def __reduce__(self) -> tuple:
        # Rebuilt from its problems, not its message, when it crosses processes (a Ray worker's error).
        return type(self), (self.problems, self.limit)


class ModelNotFoundError(UserError):
    """A model name is neither a registered alias, a local directory, nor reachable on the hub."""
