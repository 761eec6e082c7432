"""The data error every entry point reports in one line (light: `--help` imports it without torch)."""


class DataMissingError(FileNotFoundError):
    """A dataset root or file is missing; the message names the path and how to obtain the data."""
