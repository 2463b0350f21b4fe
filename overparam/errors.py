"""Errors a user can cause: the CLI turns these into one line and exit code 2."""


class UserError(Exception):
    """A bad value, a missing file or an incompatible input; printed as one line, exit code 2."""
