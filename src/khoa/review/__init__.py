"""``khoa review``: the design-review checklist, evaluated against a live installation.

Each rule (:mod:`khoa.review.rules`) has a stable id, a severity whose reason is written beside it, and
a one-line fix; it reads the installation with a handful of set-based queries (never one per secret),
so the review stays fast enough for CI against 100,000 secrets. Rules read metadata, policies and the
audit trail; only ``plaintext-secret-parameter`` reads values, and only those of ``String`` parameters,
which are not secret. No secret is ever unsealed and no value is ever printed.
"""
