"""The one error type that the command line turns into a one-line message."""

from mnad.errors import UserError

__all__ = ["UserError"]
