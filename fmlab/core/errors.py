"""The errors a user can fix: the CLI prints their one-line message and exits 2."""

import argparse


class LabError(Exception):
    """A problem the user can fix; the CLI prints its one-line message and exits 2."""


class DataError(LabError):
    """Missing or malformed data: the message names the file and what is wrong."""


class UsageError(LabError):
    """Settings, folders or a shard environment that cannot work together: the message names
    the setting and what to do."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: a usage block of many options would bury it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text):
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value
