"""``khoa xks-proxy``: serve the XKS Proxy API over a PKCS#11 token; ``khoa xks-proxy create-key``.

The PIN is read from an environment variable (``--pin-env``, default ``KHOA_XKS_PIN``), never from the
command line. The SigV4 credentials come from ``--access-key-id``/``--secret-access-key`` or from
``KHOA_XKS_ACCESS_KEY_ID``/``KHOA_XKS_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
import sys
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from khoa.cli.common import CliError, stderr_console, usage_error

if TYPE_CHECKING:
    from khoa.server.connections import HeadDeadlineProtocol

HELP = (
    "Serve AWS's External Key Store (XKS) proxy API over a PKCS#11 token: AES-256-GCM keys in the token, "
    "addressed by label, SigV4-authenticated requests (service kms-xks-proxy)."
)
app = typer.Typer(help=HELP, invoke_without_command=True, pretty_exceptions_show_locals=False)
err = stderr_console()

DEFAULT_PIN_ENV = "KHOA_XKS_PIN"
DEFAULT_PORT = 8443
# A request's head must arrive within this long of its first byte (or of the connection opening).
HEAD_SECONDS = 10.0

Module = Annotated[
    str | None, typer.Option("--pkcs11-module", metavar="PATH", help="The HSM's PKCS#11 module (.so).")
]
TokenLabel = Annotated[str | None, typer.Option("--token-label", metavar="L", help="The token's label.")]
PinEnv = Annotated[
    str,
    typer.Option("--pin-env", metavar="VAR", help="The environment variable holding the user PIN."),
]


def _token(module: str | None, token_label: str | None, pin_env: str) -> Any:
    from khoa.xks_proxy.hsm import HsmError, Token, load_module

    if not module:
        raise usage_error("--pkcs11-module PATH is required (e.g. /usr/lib/softhsm/libsofthsm2.so)")
    if not token_label:
        raise usage_error("--token-label L is required")
    pin = os.environ.get(pin_env)
    if not pin:
        raise usage_error(f"set the token's user PIN in the environment variable {pin_env} (--pin-env)")
    try:
        return Token(load_module(module), token_label, pin)
    except HsmError as exc:
        raise CliError(str(exc)) from None


@app.callback()
def serve(
    ctx: typer.Context,
    pkcs11_module: Module = None,
    token_label: TokenLabel = None,
    pin_env: PinEnv = DEFAULT_PIN_ENV,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = DEFAULT_PORT,
    path_prefix: Annotated[
        str, typer.Option("--path-prefix", metavar="P", help="Serve the API at P/kms/xks/v1.")
    ] = "",
    tls_cert: Annotated[
        str | None, typer.Option("--tls-cert", metavar="PEM", help="Server certificate.")
    ] = None,
    tls_key: Annotated[
        str | None, typer.Option("--tls-key", metavar="PEM", help="Server private key.")
    ] = None,
    tls_client_ca: Annotated[
        str | None,
        typer.Option(
            "--tls-client-ca", metavar="PEM", help="Require client certificates chained to this CA (mTLS)."
        ),
    ] = None,
    tls_client_subject: Annotated[
        str | None,
        typer.Option(
            "--tls-client-subject",
            metavar="CN",
            help="With --tls-client-ca: the client certificate's subject CN must be this "
            "(AWS KMS presents cks.kms.<region>.amazonaws.com).",
        ),
    ] = None,
    access_key_id: Annotated[
        str | None,
        typer.Option("--access-key-id", help="SigV4 access key id (or KHOA_XKS_ACCESS_KEY_ID)."),
    ] = None,
    secret_access_key: Annotated[
        str | None,
        typer.Option("--secret-access-key", help="SigV4 secret (or KHOA_XKS_SECRET_ACCESS_KEY)."),
    ] = None,
) -> None:
    """Run the proxy (without a subcommand)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"module": pkcs11_module, "token_label": token_label, "pin_env": pin_env}
        return
    from khoa.xks_proxy.app import XksProxyApp, normalize_prefix
    from khoa.xks_proxy.auth import RequestAuthenticator
    from khoa.xks_proxy.hsm import HsmError

    akid = access_key_id or os.environ.get("KHOA_XKS_ACCESS_KEY_ID")
    secret = secret_access_key or os.environ.get("KHOA_XKS_SECRET_ACCESS_KEY")
    if not akid or not secret:
        raise usage_error(
            "SigV4 credentials are required: --access-key-id and --secret-access-key, or "
            "KHOA_XKS_ACCESS_KEY_ID and KHOA_XKS_SECRET_ACCESS_KEY"
        )
    if bool(tls_cert) != bool(tls_key):
        raise usage_error("--tls-cert and --tls-key go together")
    if (tls_client_ca or tls_client_subject) and not tls_cert:
        raise usage_error("--tls-client-ca/--tls-client-subject need --tls-cert and --tls-key")
    if tls_client_subject and not tls_client_ca:
        raise usage_error("--tls-client-subject needs --tls-client-ca")
    if not 0 < port < 65536:
        raise usage_error(f"--port {port} is not a port number")
    try:
        prefix = normalize_prefix(path_prefix)
    except ValueError as exc:
        raise usage_error(f"--path-prefix: {exc}") from None
    token = _token(pkcs11_module, token_label, pin_env)
    try:
        token.check()
    except HsmError as exc:
        if "PIN" in str(exc):
            raise CliError(str(exc)) from None
        # The token may come back (a network HSM, a card re-inserted): serve, and say so in health.
        err.print(f"warning: {exc}; health status reports UNAVAILABLE until it is usable", markup=False)
    application = XksProxyApp(token, RequestAuthenticator({akid: secret}), prefix)
    _run(application, host, port, prefix, tls_cert, tls_key, tls_client_ca, tls_client_subject)


def _run(
    application: Any,
    host: str,
    port: int,
    prefix: str,
    tls_cert: str | None,
    tls_key: str | None,
    client_ca: str | None,
    client_subject: str | None,
) -> None:
    import uvicorn

    from khoa.server.connections import HeadDeadlineProtocol

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    protocol: type[HeadDeadlineProtocol] = (
        _subject_checking_protocol(client_subject) if client_subject else HeadDeadlineProtocol
    )
    scheme = "https" if tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=False,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        ssl_ca_certs=client_ca,
        ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE,
        # httptools with a deadline for each request's head (slowloris: khoa.server.connections).
        http=cast(Any, functools.partial(protocol, head_seconds=HEAD_SECONDS)),
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)

    original_startup = server.startup

    async def startup(sockets: Any = None) -> None:
        await original_startup(sockets=sockets)
        if server.started:
            print(
                f"xks-proxy listening on {scheme}://{shown}:{port}{prefix}/kms/xks/v1",
                file=sys.stderr,
                flush=True,
            )

    server.startup = startup  # type: ignore[method-assign]
    server.run()
    if not server.started:
        raise CliError(f"could not listen on {host}:{port} (is the port in use?)")


def _subject_checking_protocol(subject: str) -> type[HeadDeadlineProtocol]:
    """uvicorn's HTTP protocol, closing any TLS connection whose client certificate's subject CN is not
    ``subject`` (the CA chain is checked by the handshake itself, --tls-client-ca)."""
    from khoa.server.connections import HeadDeadlineProtocol

    class SubjectCheckingProtocol(HeadDeadlineProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            cert = transport.get_extra_info("peercert") or {}
            names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
            if subject not in names:
                logging.getLogger("khoa.xks_proxy").warning(
                    "xks-proxy: refused a TLS client whose certificate subject CN is not %s", subject
                )
                transport.close()

    return SubjectCheckingProtocol


@app.command("create-key")
def create_key(
    ctx: typer.Context,
    label: Annotated[str, typer.Argument(help="The key's label: its externalKeyId in XKS requests.")],
    pkcs11_module: Module = None,
    token_label: TokenLabel = None,
    pin_env: PinEnv = DEFAULT_PIN_ENV,
) -> None:
    """Create an AES-256 key in the token (sensitive, never extractable, encrypt/decrypt only)."""
    from khoa.xks_proxy.app import valid_key_id
    from khoa.xks_proxy.hsm import HsmError

    parent = ctx.obj or {}
    if not valid_key_id(label):
        raise usage_error("LABEL must be 1 to 128 characters: letters, digits, '.', '-' and '_'")
    token = _token(
        pkcs11_module or parent.get("module"),
        token_label or parent.get("token_label"),
        pin_env if pin_env != DEFAULT_PIN_ENV else parent.get("pin_env", pin_env),
    )
    try:
        info = token.create_key(label)
    except HsmError as exc:
        raise CliError(str(exc)) from None
    print(f"created {label}: {info.key_spec}, usage {','.join(info.usages)}, sensitive, not extractable")
