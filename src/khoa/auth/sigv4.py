"""AWS Signature Version 4 verification: the Authorization-header form SDKs and the CLI send, and the
query-string form of presigned URLs (STS GetCallerIdentity URLs, as EKS and Vault-style login use).

The server recomputes the signature from the request exactly as the client did and compares the two
in constant time. Every refusal uses the code, status and message AWS returns for the same fault, so
SDK retry and error handling behave the same against Khoa as against AWS.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import posixpath
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from urllib.parse import quote, unquote

from khoa.auth.regions import AWS_COMMERCIAL_REGIONS
from khoa.protocol.errors import AWSError

ALGORITHM = "AWS4-HMAC-SHA256"
_TERMINATOR = "aws4_request"
_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_AMZ_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z", re.ASCII)
# Bounds of the caches of pure derivations below (each is emptied when full: cheap, and never stale,
# as every entry is a function of its key alone).
_MAX_CACHED_HEADERS = 1024
_MAX_CACHED_DATES = 256
_MAX_CACHED_PATHS = 256

SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)


class SignedRequest(NamedTuple):
    """The parts of an HTTP request that SigV4 covers."""

    method: str
    raw_path: str
    query_string: str
    headers: dict[str, list[str]]
    body: bytes


class VerifiedSignature(NamedTuple):
    access_key_id: str
    region: str
    service: str
    session_token: str | None


# Headers whose single value verification reads; a request carrying one twice is refused.
_SINGLE_HEADERS = ("authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256")


def _first(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


def _missing_token() -> AWSError:
    return AWSError("MissingAuthenticationTokenException", "Missing Authentication Token", 400)


UNSIGNED_TARGET = "There were headers present in the request which were not signed: x-amz-target"


def _incomplete(message: str) -> AWSError:
    return AWSError("IncompleteSignatureException", message, 400)


def _invalid(message: str) -> AWSError:
    return AWSError("InvalidSignatureException", message, 400)


def invalid_region(region: str) -> AWSError:
    """AWS's refusal of a credential scope naming a region the endpoint does not serve (JSON services;
    the query services answer SignatureDoesNotMatch, 403, with the same message)."""
    return _invalid(f"Credential should be scoped to a valid region, not '{region[:64]}'. ")


def unrecognized_client() -> AWSError:
    return AWSError(
        "UnrecognizedClientException", "The security token included in the request is invalid.", 400
    )


def parse_authorization(header: str) -> tuple[str, dict[str, str]]:
    """Split ``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""
    algorithm, _, rest = header.strip().partition(" ")
    return algorithm, _parts(rest)


def _parts(rest: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, value = item.partition("=")
        if sep:
            parts[key.strip()] = value.strip()
    return parts


class _Authorization:
    """What verification reads from one Authorization header value, derived once per distinct value
    (a pure function of the header: no request, clock or secret goes into it)."""

    __slots__ = (
        "algorithm",
        "credential",
        "host_signed",
        "missing",
        "scope",
        "scope_string",
        "signature",
        "signed_headers",
        "signed_joined",
        "target_signed",
        "unpaired",
    )

    def __init__(self, header: str) -> None:
        algorithm, _, rest = header.strip().partition(" ")
        parts = _parts(rest)
        self.algorithm = algorithm
        # The first whitespace- or comma-delimited token without an equal sign (str.split() splits on
        # exactly the characters ``\s`` matches, so these are the tokens of ``re.split(r"[\s,]+", rest)``).
        self.unpaired: str | None = None
        for token in rest.replace(",", " ").split():
            if "=" not in token:
                self.unpaired = token
                break
        self.credential = credential = parts.get("Credential", "")
        self.signature = signature = parts.get("Signature", "")
        self.signed_joined = signed_joined = parts.get("SignedHeaders", "")
        self.missing: tuple[str, ...] = ()
        if not (credential and signature and signed_joined):
            self.missing = tuple(
                f"Authorization header requires '{name}' parameter."
                for name, given in (
                    ("Credential", credential),
                    ("Signature", signature),
                    ("SignedHeaders", signed_joined),
                )
                if not given
            )
        split = credential.split("/")
        self.scope: tuple[str, str, str, str, str] | None = None
        self.scope_string = ""  # date/region/service/terminator: the credential after the key id
        if len(split) == 5:
            self.scope = (split[0], split[1], split[2], split[3], split[4])
            self.scope_string = credential[len(split[0]) + 1 :]
        self.signed_headers = signed = signed_joined.split(";")
        self.host_signed = "host" in signed or ":authority" in signed
        self.target_signed = "x-amz-target" in signed


def credential_scope(header: str) -> list[str]:
    """An Authorization header value's ``Credential`` split at its slashes (``[""]`` if it has none):
    ``parse_authorization(header)[1].get("Credential", "").split("/")``, from the cached parse."""
    return _authorization(header).credential.split("/")


# A presigned URL is valid for at most seven days (AWS's bound on X-Amz-Expires).
MAX_PRESIGNED_SECONDS = 604800
_QUERY_AUTH = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-SignedHeaders", "X-Amz-Signature")


@dataclass(frozen=True)
class QueryAuth:
    """SigV4 carried in the query string (a presigned URL) rather than an Authorization header."""

    authorization: str  # the same fields as an Authorization header value, for the one parser
    amz_date: str
    expires: str
    session_token: str | None


def query_auth(query_string: str) -> QueryAuth | None:
    """The presigned URL's signature fields, or None when the query carries no ``X-Amz-Algorithm``.

    Each field must appear once and hold no comma or whitespace (they are re-assembled into the
    header form verification reads, where those separate fields)."""
    if "X-Amz-Algorithm" not in query_string:
        return None
    fields: dict[str, str] = {}
    for item in query_string.split("&"):
        key, _, value = item.partition("=")
        key = unquote(key.replace("+", " "))
        if key.startswith("X-Amz-"):
            if key in fields:
                raise _incomplete(f"The query parameter {key} appears more than once.")
            fields[key] = unquote(value.replace("+", " "))
    if "X-Amz-Algorithm" not in fields:
        return None
    for name in (*_QUERY_AUTH, "X-Amz-Date", "X-Amz-Expires"):
        value = fields.get(name, "")
        if not value:
            raise _incomplete(
                f"AWS query-string parameters must include '{name}'. Re-examine the query-string parameters."
            )
        if "," in value or any(c.isspace() for c in value):
            raise _incomplete(f"The query parameter {name} is malformed.")
    authorization = (
        f"{fields['X-Amz-Algorithm']} Credential={fields['X-Amz-Credential']}, "
        f"SignedHeaders={fields['X-Amz-SignedHeaders']}, Signature={fields['X-Amz-Signature']}"
    )
    return QueryAuth(
        authorization, fields["X-Amz-Date"], fields["X-Amz-Expires"], fields.get("X-Amz-Security-Token")
    )


def check_expiry(presigned: QueryAuth, signed_at: datetime, now: datetime) -> None:
    """A presigned URL's own lifetime (``X-Amz-Expires``, 1 s to seven days) on top of the skew window."""
    if not (presigned.expires.isascii() and presigned.expires.isdigit()):  # (int() takes "1_0", "٣")
        raise _incomplete("X-Amz-Expires should be a number")
    # Read no more digits than a week has (int() refuses over 4,300 of them, and takes time on
    # thousands): a longer number is more than a week, whatever its digits.
    digits = presigned.expires.lstrip("0") or "0"
    seconds = int(digits) if len(digits) <= len(str(MAX_PRESIGNED_SECONDS)) else MAX_PRESIGNED_SECONDS + 1
    if not 0 < seconds <= MAX_PRESIGNED_SECONDS:
        raise _incomplete(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800"
            if seconds > 0
            else "X-Amz-Expires must be non-negative"
        )
    if now > signed_at + timedelta(seconds=seconds):
        raise _invalid(
            f"Signature expired: the presigned URL signed at {presigned.amz_date} expired after {seconds} s."
        )


@functools.lru_cache(maxsize=_MAX_CACHED_HEADERS)
def _authorization(header: str) -> _Authorization:
    return _Authorization(header)


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k_date = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    k_region = hmac.new(k_date, region.encode(), hashlib.sha256).digest()
    k_service = hmac.new(k_region, service.encode(), hashlib.sha256).digest()
    return hmac.new(k_service, _TERMINATOR.encode(), hashlib.sha256).digest()


@functools.lru_cache(maxsize=_MAX_CACHED_PATHS)
def _canonical_uri(raw_path: str) -> str:
    path = raw_path or "/"
    normalized = posixpath.normpath(path)
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    if normalized.startswith("//"):
        normalized = "/" + normalized.lstrip("/")
    return quote(normalized, safe="/~")


def _canonical_query(query_string: str) -> str:
    if not query_string:
        return ""
    pairs: list[tuple[str, str]] = []
    for item in query_string.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        if key == "X-Amz-Signature":
            continue
        pairs.append(
            (
                quote(unquote(key.replace("+", " ")), safe="-_.~"),
                quote(unquote(value.replace("+", " ")), safe="-_.~"),
            )
        )
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def _canonical_headers(headers: dict[str, list[str]], signed: Iterable[str]) -> str:
    get = headers.get
    lines = []
    for name in signed:
        values = get(name)
        if not values:
            lines.append(f"{name}:\n")
        elif len(values) == 1:
            lines.append(f"{name}:{' '.join(values[0].split())}\n")
        else:
            joined = ",".join(" ".join(v.split()) for v in values)
            lines.append(f"{name}:{joined}\n")
    return "".join(lines)


def canonical_request(
    request: SignedRequest, signed_headers: list[str], payload_hash: str | None = None
) -> str:
    """SigV4's canonical request. The payload hash is the body's SHA-256 unless given: only S3 signs
    ``UNSIGNED-PAYLOAD`` (or a streaming marker) in its place, and no Khoa service is S3."""
    if payload_hash is None:
        payload_hash = hashlib.sha256(request.body).hexdigest()
    return _canonical(request, signed_headers, ";".join(signed_headers), payload_hash)


def _canonical(
    request: SignedRequest, signed_headers: list[str], signed_joined: str, payload_hash: str
) -> str:
    return (
        f"{request.method}\n{_canonical_uri(request.raw_path)}\n"
        f"{_canonical_query(request.query_string)}\n"
        f"{_canonical_headers(request.headers, signed_headers)}\n{signed_joined}\n{payload_hash}"
    )


def check_declared_payload(request: SignedRequest) -> None:
    """A declared ``x-amz-content-sha256`` must be the body's SHA-256.

    The signature covers the body's hash, never the declared value, so a request signed with
    ``UNSIGNED-PAYLOAD`` (S3's opt-out of body signing) fails verification as it does on every non-S3
    AWS service: SignatureDoesNotMatch. A declared hash that is not the body's is refused the same way,
    even if the signature over the real body holds: the header is a claim about the body, and a false
    claim is not passed on to anything that might believe it.
    """
    declared = request.headers.get("x-amz-content-sha256")
    if declared is None:
        return
    _check_declared(declared, hashlib.sha256(request.body).hexdigest())


def _check_declared(declared: list[str], actual: str) -> None:
    if len(declared) != 1 or not hmac.compare_digest(declared[0].strip().encode(), actual.encode()):
        raise _invalid(SIGNATURE_MISMATCH)


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def _request_time(
    request: SignedRequest, authorization: str, presigned: QueryAuth | None = None
) -> tuple[str, datetime]:
    raw = presigned.amz_date if presigned is not None else _first(request.headers, "x-amz-date")
    if raw is None:
        date_header = _first(request.headers, "date")
        if date_header is None:
            raise _incomplete(
                "Authorization header requires existence of either a 'X-Amz-Date' or a "
                f"'Date' header. Authorization={authorization}"
            )
        from email.utils import parsedate_to_datetime

        try:
            parsed = parsedate_to_datetime(date_header)
            # The instant, in UTC: the signature covers the digits of the request time, so the digits
            # must be the UTC time; otherwise an unsigned offset ("-1000") would move an old request's
            # instant into the skew window while its digits still match the signature.
            parsed = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except (TypeError, ValueError, OverflowError):
            # (OverflowError: a year, hour or offset of 20 digits, or a date a day's offset moves out
            # of years 1 to 9999)
            raise _incomplete(
                f"Date must be in ISO-8601 'basic format'. Got '{date_header}'. "
                "See http://en.wikipedia.org/wiki/ISO_8601"
            ) from None
        return parsed.strftime(_AMZ_DATE_FORMAT), parsed
    try:
        signed_at = _parse_amz_date(raw)
    except ValueError:
        raise _incomplete(
            f"Date must be in ISO-8601 'basic format'. Got '{raw}'. See http://en.wikipedia.org/wiki/ISO_8601"
        ) from None
    return raw, signed_at


@functools.lru_cache(maxsize=_MAX_CACHED_DATES)  # an X-Amz-Date value repeats for a second
def _parse_amz_date(raw: str) -> datetime:
    """``20261129T080000Z`` as a UTC datetime (strptime took longer than checking the signature)."""
    match = _AMZ_DATE.fullmatch(raw)
    if match is None:
        raise ValueError(raw)
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def _fmt(moment: datetime) -> str:
    return moment.strftime(_AMZ_DATE_FORMAT)


def check_skew(amz_date: str, signed_at: datetime, now: datetime, skew: timedelta) -> None:
    earliest = now - skew
    if signed_at < earliest:
        raise _invalid(
            f"Signature expired: {amz_date} is now earlier than {_fmt(earliest)} "
            f"({_fmt(now)} - {int(skew.total_seconds() // 60)} min.)"
        )
    latest = now + skew
    if signed_at > latest:
        raise _invalid(
            f"Signature not yet current: {amz_date} is still later than {_fmt(latest)} "
            f"({_fmt(now)} + {int(skew.total_seconds() // 60)} min.)"
        )


SecretLookup = Callable[[str], "str | None"]


class SigV4Verifier:
    """Verifies SigV4 header signatures; caches derived signing keys (they change once a day)."""

    def __init__(
        self, max_cached_keys: int = 4096, regions: Collection[str] = AWS_COMMERCIAL_REGIONS
    ) -> None:
        # Each derived signing key as an HMAC keyed with it and fed nothing yet: a copy of it signs
        # one request (the key's own processing is done once, not per request).
        self._keys: dict[tuple[str, str, str, str, str], hmac.HMAC] = {}
        self._max = max_cached_keys
        self.regions = frozenset(regions)  # the only regions a credential scope may name (KHOA_REGIONS)

    def _signer(self, secret: str, akid: str, date: str, region: str, service: str) -> hmac.HMAC:
        fingerprint = hashlib.sha256(secret.encode()).hexdigest()
        cache_key = (akid, fingerprint, date, region, service)
        signer = self._keys.get(cache_key)
        if signer is None:
            if len(self._keys) >= self._max:
                self._keys.clear()
            signer = hmac.new(signing_key(secret, date, region, service), digestmod="sha256")
            self._keys[cache_key] = signer
        return signer

    def parse(self, request: SignedRequest) -> tuple[str, dict[str, str]] | None:
        header = _first(request.headers, "authorization")
        if header is None:
            return None
        return header, parse_authorization(header)[1]

    def verify(
        self,
        request: SignedRequest,
        *,
        service: str,
        now: datetime,
        skew: timedelta,
        lookup_secret: SecretLookup,
    ) -> VerifiedSignature:
        headers = request.headers
        values = headers.get("authorization")
        presigned = None
        for name in _SINGLE_HEADERS:
            if len(headers.get(name) or ()) > 1:
                # Which one counts would be the server's guess, not the signer's statement.
                raise _incomplete(f"Only one '{name}' header is allowed in a signed request.")
        if values:
            header = values[0]
        else:
            presigned = query_auth(request.query_string)  # a presigned URL (STS's GetCallerIdentity)
            if presigned is None:
                raise _missing_token()
            header = presigned.authorization
        auth = _authorization(header)
        if auth.algorithm != ALGORITHM:
            raise _incomplete(f"Unsupported AWS 'algorithm': '{auth.algorithm}'")
        if auth.unpaired is not None:
            raise _incomplete(
                f"'{auth.unpaired}' not a valid key=value pair (missing equal-sign) in Authorization header: "
                f"'{header}'."
            )
        if auth.missing:
            problems = list(auth.missing)
            if not headers.get("x-amz-date") and not headers.get("date"):
                problems.append(
                    "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                )
            raise _incomplete(" ".join(problems) + f" Authorization={header}")
        if auth.scope is None:
            raise _incomplete(
                "Credential must have exactly 5 slash-delimited elements, e.g. "
                f"keyid/date/region/service/term, got '{auth.credential}'"
            )
        akid, date, region, scoped_service, terminator = auth.scope
        amz_date, signed_at = _request_time(request, header, presigned)
        if terminator != _TERMINATOR:
            raise _invalid(
                f"Credential should be scoped with a valid terminator: '{_TERMINATOR}', not '{terminator}'. "
            )
        if scoped_service != service:
            raise _invalid(f"Credential should be scoped to correct service: '{service}'. ")
        if region not in self.regions:
            raise invalid_region(region)
        if date != amz_date[:8]:
            raise _invalid(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                f"from HTTP: '{date}' != '{amz_date[:8]}', from '{amz_date}'."
            )
        if not auth.host_signed:
            raise _invalid("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
        if not auth.target_signed and "x-amz-target" in headers:
            # The header names the operation: unsigned, anyone holding a signed request (a proxy's log)
            # could replay its body as another operation within the skew. Every SDK signs it.
            raise _invalid(UNSIGNED_TARGET)
        check_skew(amz_date, signed_at, now, skew)
        if presigned is not None:
            check_expiry(presigned, signed_at, now)
        secret = lookup_secret(akid)
        if secret is None:
            raise unrecognized_client()
        payload_hash = hashlib.sha256(request.body).hexdigest()
        declared = headers.get("x-amz-content-sha256")
        if declared is not None:
            _check_declared(declared, payload_hash)
        canonical = _canonical(request, auth.signed_headers, auth.signed_joined, payload_hash)
        to_sign = (
            f"{ALGORITHM}\n{amz_date}\n{auth.scope_string}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        signature = self._signer(secret, akid, date, region, scoped_service).copy()
        signature.update(to_sign.encode())
        expected = signature.hexdigest()
        if not hmac.compare_digest(expected, auth.signature):
            raise _invalid(SIGNATURE_MISMATCH)
        if presigned is not None:
            token = presigned.session_token
        else:
            tokens = headers.get("x-amz-security-token")
            token = tokens[0] if tokens else None
        return VerifiedSignature(
            access_key_id=akid, region=region, service=scoped_service, session_token=token
        )
