"""The errors raised for input a user can fix (a bad config value, a foreign checkpoint)."""


class UserError(ValueError):
    """Bad input a user can fix: the message names the file or value and the cause."""


class OptionError(UserError):
    """A config value a user must change; ``field`` names the option (the config's field),
    so that a caller can say where it was set (``--batch-size``, ``score.batch_size``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
