"""The one exception type for problems the user can fix (bad input, missing file), and how a
foreign exception is shown inside such a one-line message."""


class UserError(Exception):
    """A problem with the user's input or files; shown as one line with the fix, no traceback."""


def first_line(err: BaseException) -> str:
    """"Type: first line of the message" (at most 200 characters of it), for one-line errors."""
    return f"{type(err).__name__}: " + (str(err).strip().splitlines() or [""])[0][:200]
