"""The version of safemap: the single source, read by the build (pyproject.toml) too."""

__version__ = "0.1.0"
