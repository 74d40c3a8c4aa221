"""vaequery's version, in a module of its own so that :mod:`vaequery.io` can read it
without importing the package (which imports :mod:`vaequery.io`)."""

__version__ = "0.1.0"
