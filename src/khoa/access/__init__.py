"""Access decisions: IAM's policy language (``policy``), its condition operators (``conditions``),
AWS's evaluation logic (``evaluate``), a caller's stored policies (``directory``), and the
:class:`~khoa.access.authorize.Authorizer` every service is given.

Named ``access`` rather than ``iam`` so it is not mistaken for the IAM API (``khoa.services.iam``),
which is one of its users.
"""
