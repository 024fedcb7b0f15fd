"""The one exception type for mistakes a user can fix.

Design choice: every error caused by the user's input (a bad config value, a missing checkpoint,
a prompt the tokenizer cannot encode) is a `UserError`. The command line catches exactly this type
and prints its message on one line with a non-zero exit code; anything else is a bug and keeps its
traceback. `UserError` subclasses `ValueError`, so library callers can catch it as one.
"""


class UserError(ValueError):
    """A mistake in the user's input; the message names the problem and the fix."""
