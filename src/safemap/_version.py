"""The installed version of safemap."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("safemap")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
