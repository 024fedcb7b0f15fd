"""The one exception type for mistakes a user can fix.

Design choice: every error caused by the user's input (a bad config value, a missing checkpoint,
a prompt the tokenizer cannot encode) is a `UserError`. The command line catches exactly this type
and prints its message on one line with a non-zero exit code; anything else is a bug and keeps its
traceback. `UserError` subclasses `ValueError`, so library callers can catch it as one.
"""


class UserError(ValueError):
    """A mistake in the user's input; the message names the problem and the fix.

    everywhere: under torchrun, every process raises this same error (a config mistake, or rank
    0's failure passed on to the others), so rank 0 alone prints it; any other error is printed
    by the process that hit it.
    """

    everywhere = False


def whole_number(value) -> bool:
    """An int, not a bool (True is an int to Python) and not a float that int() would cut."""
    return isinstance(value, int) and not isinstance(value, bool)


def real_number(value) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def user_path(path):
    """path as a Path, with a leading ~ or ~user turned into that home folder; a user (or home)
    that cannot be found is a UserError, not a RuntimeError from deep inside pathlib."""
    from pathlib import Path

    try:
        return Path(path).expanduser()
    except RuntimeError:
        user = str(path).split("/", 1)[0]
        raise UserError(f"{path}: {user} names no user with a home folder on this machine; write the path in full "
                        "(e.g. /home/NAME/...), or ~/... for your own home") from None


def check_token_ids(idx, vocab_size: int, what: str, longest: int | None = None) -> None:
    """Refuse what is not token ids (B, T) for a model of vocab_size tokens: an integer tensor of
    two dimensions with at least one row and one position (at most `longest` positions, when
    given), every id in [0, vocab_size). Reads the smallest and largest id (on a GPU, one wait)."""
    import torch  # here, so that the command line starts without PyTorch

    example = "torch.tensor([[1, 2, 3]])"
    if not torch.is_tensor(idx) or idx.dtype not in (torch.long, torch.int32):
        kind = f"a {idx.dtype} tensor" if torch.is_tensor(idx) else type(idx).__name__
        raise UserError(f"{what} must be token ids, a torch.long tensor (B, T) such as {example}; got {kind}")
    if idx.dim() != 2 or idx.shape[0] == 0 or idx.shape[1] == 0:
        raise UserError(f"{what} must be token ids of shape (B, T), with B and T at least 1, such as {example}; "
                        f"got shape {tuple(idx.shape)} (one prompt of ids: ids[None])")
    if longest is not None and idx.shape[1] > longest:
        raise UserError(f"{what} holds {idx.shape[1]} positions; this model reads at most model.block_size = "
                        f"{longest}: pass the last {longest}")
    low, high = int(idx.min()), int(idx.max())
    if low < 0 or high >= vocab_size:
        raise UserError(f"{what} holds the id {low if low < 0 else high}; this model's ids go from 0 to {vocab_size - 1}")


def short_cause(error: BaseException, limit: int = 120) -> str:
    """An exception as a few words on one line, e.g. "ValueError: bad header", for a one-line
    message: the first line of its text, cut at a word boundary when longer than limit."""
    text = " ".join((str(error).strip().splitlines() or [""])[0].split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
