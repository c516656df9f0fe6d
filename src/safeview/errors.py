"""Exceptions SafeView raises at its edges, each with a one-line message that names the input and what to do."""


class SafeViewError(Exception):
    """Base class of every error SafeView reports to a user."""


class ImageError(SafeViewError):
    """An input could not be decoded as a safe, bounded RGB image."""


class ModelError(SafeViewError):
    """A classifier or model file could not be loaded or does not match what was asked for."""
