"""Authentication: SigV4 verification and the principals it yields."""
