"""The error raised for input a user can fix (a bad config value, a foreign checkpoint)."""


class UserError(ValueError):
    """Bad input a user can fix: the message names the file or value and the cause."""
