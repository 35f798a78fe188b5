"""``khoa env`` and ``khoa aws`` — point the aws CLI and the SDKs at an installation.

AWS's own tools find an endpoint, credentials and a region in the environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or ``AWS_PROFILE``, ``AWS_REGION`` for boto3 and
``AWS_DEFAULT_REGION`` for the aws CLI v1), so one ``eval "$(khoa env)"`` is all a shell needs, and
``khoa aws …`` runs the aws CLI with that environment (what ``awslocal`` is to LocalStack).

Where a server listens is known only to the server: each start records its URL in
``<data-dir>/endpoint`` (:func:`record_endpoint`); without that file the URL comes from the settings
(``KHOA_HOST``, ``KHOA_PORT``, ``KHOA_TLS_CERT``). Credentials are the installation's root credentials
(``<data-dir>/root-credentials``), or a named profile of the person's own AWS configuration
(``--profile``), e.g. an IAM user's keys, which keeps the root keys out of the shell.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from khoa.cli.common import CliError, DataDir, installation_settings, usage_error

if TYPE_CHECKING:
    from khoa.settings import Settings

ENDPOINT_FILE = "endpoint"
# Variables an outer shell may hold (credentials of a real AWS account) that would otherwise be sent
# along with Khoa's credentials or override them.
_STALE = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

Profile = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="Use this profile of your AWS configuration (~/.aws/credentials or ~/.aws/config) instead "
        "of the installation's root credentials.",
    ),
]


def endpoint_url(settings: Settings) -> str:
    """The URL a client on this machine reaches a server with these settings at."""
    host = settings.host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:  # 0.0.0.0 or ::, reachable on loopback
        host = "127.0.0.1" if address.version == 4 else "::1"
        address = ipaddress.ip_address(host)
    if address is not None and address.version == 6:
        host = f"[{host}]"
    scheme = "https" if settings.tls_cert else "http"
    return f"{scheme}://{host}:{settings.port}"


def record_endpoint(settings: Settings) -> str:
    """Write the server's URL to ``<data-dir>/endpoint`` (for ``khoa env``); returns it."""
    url = endpoint_url(settings)
    (settings.data_dir / ENDPOINT_FILE).write_text(url + "\n")
    return url


def _recorded_endpoint(settings: Settings) -> str:
    try:
        recorded = (settings.data_dir / ENDPOINT_FILE).read_text().strip()
    except OSError:
        recorded = ""
    return recorded or endpoint_url(settings)


def root_credentials(data_dir: Path) -> tuple[str, str]:
    """The root access key id and secret from ``<data-dir>/root-credentials``."""
    from khoa.bootstrap import ROOT_CREDENTIALS_FILE  # here: khoa.bootstrap brings the storage layer

    path = data_dir / ROOT_CREDENTIALS_FILE
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open() as handle:
            parser.read_file(handle)
        section = parser["default"]
        return section["aws_access_key_id"], section["aws_secret_access_key"]
    except FileNotFoundError:
        raise CliError(
            f"no root credentials in {path} (it is written on an installation's first start; it may have "
            "been moved): give --profile NAME to use credentials from your AWS configuration"
        ) from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (configparser.Error, KeyError):
        raise CliError(
            f"{path} is not in the aws CLI's credentials format ([default] with aws_access_key_id and "
            "aws_secret_access_key): give --profile NAME instead"
        ) from None


def _check_profile(name: str) -> None:
    import botocore.session

    available = botocore.session.Session().available_profiles
    if name not in available:
        known = ", ".join(sorted(available)) or "none"
        raise usage_error(
            f"--profile {name!r}: no such profile in your AWS configuration (profiles: {known}); see "
            "`aws configure --profile NAME`"
        )


def client_environment(data_dir: Path | None, profile: str | None) -> tuple[dict[str, str], list[str]]:
    """The variables to set and the ones to unset so AWS's tools reach this installation."""
    settings = installation_settings(data_dir, None)
    if not settings.data_dir.is_dir():
        raise CliError(
            f"no Khoa installation in {settings.data_dir} (the directory does not exist): check --data-dir "
            f"(default .khoa, or KHOA_DATA_DIR), or start `khoa server --data-dir {settings.data_dir}` once"
        )
    variables = {"AWS_ENDPOINT_URL": _recorded_endpoint(settings)}
    unset = list(_STALE)
    if profile is None:
        key_id, secret = root_credentials(settings.data_dir)
        variables |= {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
        unset.append("AWS_PROFILE")
    else:
        _check_profile(profile)
        # Keys in the environment win over a profile in every SDK: drop them.
        variables["AWS_PROFILE"] = profile
        unset += ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    variables |= {"AWS_REGION": settings.default_region, "AWS_DEFAULT_REGION": settings.default_region}
    return variables, unset


def export_lines(variables: dict[str, str], unset: list[str] | None = None) -> str:
    """Shell lines (POSIX sh) that set ``variables`` and unset ``unset``."""
    lines = [f"unset {' '.join(unset)}"] if unset else []
    lines.append("export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in variables.items()))
    return "\n".join(lines)


def env(data_dir: DataDir = None, profile: Profile = None) -> None:
    """Print the lines that point the aws CLI and the SDKs at this installation: eval "$(khoa env)"."""
    variables, unset = client_environment(data_dir, profile)
    print(export_lines(variables, unset))


def _aws_executable() -> str:
    beside = Path(sys.executable).parent / "aws"  # the aws CLI installed in Khoa's own environment
    if beside.is_file():
        return str(beside)
    found = shutil.which("aws")
    if found is None:
        raise CliError("the aws CLI is not installed: pip install awscli (or install the AWS CLI v2)")
    return found


def aws(
    ctx: typer.Context,
    data_dir: DataDir = None,
    profile: Profile = None,
) -> int:
    """Run the aws CLI against this installation, as awslocal does for LocalStack (khoa aws kms
    list-keys); khoa's options come first, everything from the aws command on goes to aws unchanged."""
    variables, unset = client_environment(data_dir, profile)
    environment = {k: v for k, v in os.environ.items() if k not in unset} | variables
    command = [_aws_executable(), *ctx.args]
    try:
        return subprocess.run(command, env=environment, check=False).returncode
    except OSError as exc:
        raise CliError(f"cannot run {command[0]}: {exc.strerror or exc}") from None


AWS_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False}
