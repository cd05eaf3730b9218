"""The one exception type a user sees: a message that names the field and the fix, never a traceback.

Defined here, below everything, so the layer builder (lambda_layers/) raises it without importing the driver;
ernie.errors names the same class for the driver's modules."""


class ErnieError(Exception):
    """A problem the user can fix (bad config, bad input, a missing tool). The CLI prints it and exits 2."""
