"""The one user-facing error type of the CLI (kept apart from main so `python -m cli.main` sees one class)."""


class CliError(Exception):
    """A problem the user can fix (bad path, bad manifest line); printed without a traceback."""
