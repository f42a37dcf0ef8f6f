"""User-facing errors: one clear line, no traceback."""


class PcrmError(Exception):
    """An error caused by the user's input (file, row, field or option); printed as one line."""


def require(checks) -> None:
    """Raise `PcrmError` with the message of the first `(ok, message)` pair that is not ok."""
    for ok, message in checks:
        if not ok:
            raise PcrmError(message)
