"""``khoa xks-proxy``: an External Key Store (XKS) proxy in front of any PKCS#11 token.

It serves the four operations of AWS's published XKS Proxy API (v1) — GetHealthStatus, GetKeyMetadata,
Encrypt, Decrypt — under ``[path-prefix]/kms/xks/v1``, verifies every request's SigV4 signature
(service ``kms-xks-proxy``), and performs AES-256-GCM inside the token: key material never leaves it.

Modules by job: :mod:`errors` (the spec's error names and statuses), :mod:`hsm` (the PKCS#11 token),
:mod:`auth` (SigV4 verification), :mod:`operations` (request validation and the four operations),
:mod:`app` (the ASGI application uvicorn serves).
"""
