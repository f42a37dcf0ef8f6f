"""User-facing errors: one clear line, no traceback."""


class PcrmError(Exception):
    """An error caused by the user's input (file, row, field or option); printed as one line."""
