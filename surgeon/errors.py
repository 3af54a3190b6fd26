"""The one exception type the CLI turns into a one-line message and exit code 2."""


class SurgeonError(Exception):
    """Bad input or an impossible request. The message is one line that names the file and the problem."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


def did_you_mean(word, choices, cutoff: float = 0.6) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when none is close: for messages
    about unknown names (methods, recipe keys, dataset formats)."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""
