"""The one error type for bad user input; its message is shown to the user as it is."""


class InputError(ValueError):
    """Media or text the assistant cannot use: a one-line message, never a traceback. `code` names the
    kind for machine readers (the API's error code)."""

    def __init__(self, message: str, code: str = "invalid_input"):
        super().__init__(message)
        self.code = code
