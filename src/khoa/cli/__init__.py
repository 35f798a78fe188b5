"""The ``khoa`` command line."""
