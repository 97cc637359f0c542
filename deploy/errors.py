"""The one exception type of the deploy tool."""


class DeployError(Exception):
    """A deployment step failed for a reason the operator can act on.

    The message says what went wrong and what to do about it; the CLI prints
    it as is (no traceback) and exits non-zero.
    """
