"""Public parameters: ``/aws/service/global-infrastructure/...``, the regions and services served.

AWS publishes, under ``/aws/service/global-infrastructure``, a read-only tree of the regions and services
it offers ("Calling public parameters for AWS services, Regions, endpoints, ..." in the Systems Manager
user guide). Khoa serves the same tree for what the installation itself serves: the regions of
``KHOA_REGIONS`` and the services Khoa implements, so tools that discover regions this way (scripts,
``aws ssm get-parameters-by-path --path /aws/service/global-infrastructure/regions``) see Khoa's world.

The tree, every leaf a String parameter of version 1::

    regions/<region>                                  the region code
    regions/<region>/longName|domain|partition        from botocore's endpoints data (known regions only)
    regions/<region>/services/<service>               the service code
    regions/<region>/services/<service>/endpoint      the AWS hostname of the service in that region
    services/<service>                                the service code
    services/<service>/longName                       the service's name
    services/<service>/regions/<region>               the region code

AWS's tree also holds availability zones, local and Wavelength zones and the geolocation of each region;
Khoa has none of those, so they are left out rather than invented. A public parameter's ARN has no
account (``arn:aws:ssm:<region>::parameter/aws/service/...``), as AWS's do. Nothing here can be written:
names beginning with ``aws`` are reserved (see :mod:`khoa.services.ssm.names`).
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import botocore.loaders

from khoa.protocol.context import RequestContext

ROOT = "/aws/service/global-infrastructure"
PREFIX = "/aws/service/"

# The services an installation of Khoa serves, by AWS service code, with the long names AWS's own
# public parameters give them.
SERVICES: dict[str, str] = {
    "cloudtrail": "AWS CloudTrail",
    "iam": "AWS Identity and Access Management (IAM)",
    "kms": "AWS Key Management Service",
    "secretsmanager": "AWS Secrets Manager",
    "ssm": "AWS Systems Manager",
    "sts": "AWS Security Token Service",
}

# The date every public parameter reports as last modified: fixed, so answers do not change from one
# process (or node) to the next.
LAST_MODIFIED = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class _Region:
    long_name: str
    partition: str
    domain: str


@functools.cache
def _known_regions() -> dict[str, _Region]:
    """Every region botocore's endpoints data describes, with its partition and DNS suffix."""
    data: dict[str, Any] = botocore.loaders.Loader().load_data("endpoints")
    regions: dict[str, _Region] = {}
    for partition in data["partitions"]:
        for code, info in partition["regions"].items():
            regions[code] = _Region(
                info.get("description", code), partition["partition"], partition["dnsSuffix"]
            )
    return regions


def _endpoint(service: str, region: str, known: _Region) -> str:
    if service == "iam" and known.partition == "aws":
        return "iam.amazonaws.com"  # IAM is a global service in the aws partition: one endpoint
    return f"{service}.{region}.{known.domain}"


@dataclass(frozen=True)
class PublicTree:
    """The public parameters for one set of served regions: names in order, and their values."""

    names: tuple[str, ...]
    values: dict[str, str]

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def under(self, path: str, recursive: bool, after: str | None) -> list[str]:
        """The names under ``path`` (one level below it unless ``recursive``) after ``after``, in order."""
        base = path.rstrip("/") + "/"
        start = (
            bisect.bisect_right(self.names, after)
            if after and after >= base
            else bisect.bisect_left(self.names, base)
        )
        found: list[str] = []
        for name in self.names[start:]:
            if not name.startswith(base):
                break
            if recursive or "/" not in name[len(base) :]:
                found.append(name)
        return found


@functools.cache
def tree(regions: tuple[str, ...]) -> PublicTree:
    """The tree for ``regions`` (built once per process for the installation's regions)."""
    known = _known_regions()
    values: dict[str, str] = {}
    for region in regions:
        values[f"{ROOT}/regions/{region}"] = region
        info = known.get(region)
        if info is not None:
            values[f"{ROOT}/regions/{region}/longName"] = info.long_name
            values[f"{ROOT}/regions/{region}/domain"] = info.domain
            values[f"{ROOT}/regions/{region}/partition"] = info.partition
        for service in SERVICES:
            values[f"{ROOT}/regions/{region}/services/{service}"] = service
            if info is not None:
                values[f"{ROOT}/regions/{region}/services/{service}/endpoint"] = _endpoint(
                    service, region, info
                )
            values[f"{ROOT}/services/{service}/regions/{region}"] = region
    for service, long_name in SERVICES.items():
        values[f"{ROOT}/services/{service}"] = service
        values[f"{ROOT}/services/{service}/longName"] = long_name
    return PublicTree(tuple(sorted(values)), values)


def is_public(name: str) -> bool:
    return name.startswith(PREFIX)


def arn(ctx: RequestContext, name: str) -> str:
    """A public parameter's ARN: AWS's have no account."""
    return f"arn:aws:ssm:{ctx.region}::parameter{name}"


def parameter(ctx: RequestContext, name: str, value: str) -> dict[str, Any]:
    """The Parameter GetParameter(s) and GetParametersByPath return for a public parameter."""
    return {
        "Name": name,
        "Type": "String",
        "Value": value,
        "Version": 1,
        "LastModifiedDate": LAST_MODIFIED,
        "ARN": arn(ctx, name),
        "DataType": "text",
    }
