"""The one exception type for problems the user can fix (bad input, missing file)."""


class UserError(Exception):
    """A problem with the user's input or files; shown as one line with the fix, no traceback."""
