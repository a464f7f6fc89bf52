"""The one error type for bad user input (its message is shown to the user as it is), and the signal
that work was given up for something more urgent."""

from typing import Callable

Stop = Callable[[], bool]  # asked between steps of long work: True gives it up (Interrupted)


class InputError(ValueError):
    """Media or text the assistant cannot use: a one-line message, never a traceback. `code` names the
    kind for machine readers (the API's error code)."""

    def __init__(self, message: str, code: str = "invalid_input"):
        super().__init__(message)
        self.code = code


class Interrupted(Exception):
    """Work given up because its `stop` said so: speculative work (hearing a recording still being made)
    making way for an answer."""


def check(stop: Stop | None) -> None:
    if stop is not None and stop():
        raise Interrupted
