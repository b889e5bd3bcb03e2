"""The command line: parse, call the public API, print, exit with the error's code."""

from .main import cli, main

__all__ = ["cli", "main"]
