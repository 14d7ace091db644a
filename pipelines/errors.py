"""The errors that the command line turns into a one-line message."""

from mnad.errors import OptionError, UserError

__all__ = ["OptionError", "UserError"]
