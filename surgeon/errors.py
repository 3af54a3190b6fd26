"""The one exception type the CLI turns into a one-line message and exit code 2."""


class SurgeonError(Exception):
    """Bad input or an impossible request. The message is one line that names the file and the problem."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
