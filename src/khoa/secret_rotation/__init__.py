"""Secret rotation: the function registry, the four-step engine, and built-in database rotators."""
