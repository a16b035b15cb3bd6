"""pgops: keep a PostgreSQL-backed application fast without babysitting the database."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pgops")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
