"""``khoa secrets emergency-rotate SECRET_ID`` — rotate a leaked secret now and make the leaked value
stop working (the runbook docs/runbooks/secret-rotation-emergency.md).

A client of the API like the aws CLI, not an operator command on the data directory: it reaches Khoa at
``--endpoint-url`` (or ``AWS_ENDPOINT_URL``) with the standard credential chain (``AWS_ACCESS_KEY_ID``…,
``AWS_PROFILE`` or ``--profile``) and calls ``EmergencyRotateSecret``, which needs
``khoa:EmergencyRotateSecret`` and ``secretsmanager:RotateSecret`` on the secret. The call is sent once
(never retried: a second call would start a second rotation) and may take as long as the rotation
function does. Exit codes: 0 rotated and every earlier value refused, 1 the rotation failed (what was
done is printed), 2 usage, connection or permission errors.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from khoa.cli.common import USAGE, CliError, usage_error

app = typer.Typer(help="Secrets Manager operations Khoa adds.", no_args_is_help=True)

# An emergency rotation runs its function's four steps and then checks the earlier credentials: far
# longer than an ordinary call (the server gives it 50 s; this waits a little longer than that).
READ_TIMEOUT_SECONDS = 90
_PERMISSION = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)
_USAGE = frozenset({"ValidationException", "InvalidParameterException", "SerializationException"})

EndpointUrl = Annotated[
    str | None,
    typer.Option("--endpoint-url", metavar="URL", help="Khoa's URL (default: AWS_ENDPOINT_URL)."),
]
ProfileName = Annotated[
    str | None,
    typer.Option(
        "--profile", metavar="NAME", help="A profile of your AWS configuration (default: AWS_PROFILE)."
    ),
]
Region = Annotated[
    str | None,
    typer.Option(
        "--region", metavar="REGION", help="The secret's region (default: AWS_REGION, the profile's)."
    ),
]


def _client(endpoint_url: str | None, profile: str | None, region: str | None) -> Any:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ProfileNotFound

    from khoa.client.leaks import leaks_client

    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        raise usage_error(
            'no endpoint: give --endpoint-url URL or set AWS_ENDPOINT_URL (eval "$(khoa env)" sets it)'
        )
    try:
        session = boto3.session.Session(profile_name=profile)
    except ProfileNotFound:
        raise usage_error(f"--profile {profile!r}: no such profile in your AWS configuration") from None
    if session.get_credentials() is None:
        raise usage_error(
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE / --profile "
            '(eval "$(khoa env)" sets the installation\'s root credentials)'
        )
    config = Config(
        retries={"total_max_attempts": 1},
        connect_timeout=10,
        read_timeout=READ_TIMEOUT_SECONDS,
    )
    chosen = region or session.region_name or "us-east-1"
    return leaks_client(session, endpoint, chosen, config=config)


def _call(client: Any, secret_id: str) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

    try:
        result: dict[str, Any] = client.emergency_rotate_secret(SecretId=secret_id)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        if code in _PERMISSION:
            raise CliError(f"not allowed ({code}): {message}", USAGE) from None
        if code in _USAGE:
            raise usage_error(f"{code}: {message}") from None
        raise CliError(f"{code}: {message}") from None
    except ReadTimeoutError:
        raise CliError(
            f"no answer within {READ_TIMEOUT_SECONDS} s: the rotation may still be running; look at "
            f"`aws secretsmanager describe-secret --secret-id {secret_id}` before running this again"
        ) from None
    except BotoCoreError as exc:  # cannot connect, bad endpoint URL, no region...
        raise CliError(f"cannot reach Khoa: {exc}", USAGE) from None
    result.pop("ResponseMetadata", None)
    return result


@app.command("emergency-rotate")
def emergency_rotate(
    secret_id: Annotated[str, typer.Argument(metavar="SECRET_ID", help="The secret's name or ARN.")],
    endpoint_url: EndpointUrl = None,
    profile: ProfileName = None,
    region: Region = None,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print JSON.")] = False,
) -> None:
    """Rotate SECRET_ID now and make its earlier values stop working (after a leak).

    Unlike RotateSecret, the previous credentials do not stay valid: for alternating-users rotators the
    previous user's password is changed too, and every earlier value is checked to be refused."""
    result = _call(_client(endpoint_url, profile, region), secret_id)
    # Plain text, not Rich: an ARN's ":secret:" would be printed as an emoji.
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"Emergency rotation of {result.get('ARN', secret_id)}")
    typer.echo(f"  new version (AWSCURRENT): {result.get('VersionId', '')}")
    for action in result.get("Actions", []):
        typer.echo(f"  - {action}")
