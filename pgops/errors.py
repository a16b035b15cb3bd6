"""The one error type a user can act on.

Anything raised as `PgopsError` is printed as one line and ends the command with its exit code; any other
exception is a bug and shows a traceback only with `--debug`.
"""

# Exit codes follow the monitoring-plugin convention so cron and alert tooling can read them.
EXIT_OK = 0
EXIT_WARNING = 1
EXIT_CRITICAL = 2
EXIT_ERROR = 3  # pgops could not do its job (bad input, unreachable database, missing privilege)


class PgopsError(Exception):
    """A failure the user can fix: the message says what and how."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message
