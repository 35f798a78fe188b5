"""``khoa scan``: find leaked values in files, directories and git history.

Two detectors, one report. detect-secrets (its plugins, filters and ``.secrets.baseline``) finds
generic secret *patterns*; Khoa itself says which candidates are values it holds — ``live`` (still
working) or ``former`` (held once, no longer valid) — through the ``khoa-leaks`` API, which answers
with resource names and never with a value (docs: issue 15; :mod:`khoa.scan.check`).

Modules: ``sources`` (files, work trees, history), ``candidates`` (which strings of a line to ask
about), ``detect`` (detect-secrets), ``check`` (the API, batched), ``scanner`` (one scan),
``report`` (table, JSON, SARIF). The command line is :mod:`khoa.cli.scan`.
"""
