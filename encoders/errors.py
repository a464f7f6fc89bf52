"""The one error type for bad user input; its message is shown to the user as it is."""


class InputError(ValueError):
    """Media or text the assistant cannot use: a one-line message, never a traceback."""
