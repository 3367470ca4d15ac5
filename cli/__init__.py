"""The `labelloop` command-line tool."""
