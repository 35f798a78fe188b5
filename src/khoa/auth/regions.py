"""The regions an installation serves (``KHOA_REGIONS``).

Every region a request names in its SigV4 credential scope becomes a namespace of its own: resources,
and a signed audit chain that every digest period extends for as long as the installation lives. A
server that accepted any syntactically valid region let an unauthenticated caller create chains at
will (40 denied calls, 40 chains), so only configured regions are served; a scope naming another one
is refused as AWS refuses it, before the caller's key is even looked up.
"""

from __future__ import annotations

import re

# The AWS commercial partition ("aws") as botocore 1.44.3's endpoints.json lists it (December 2026).
# China, GovCloud, ISO and European Sovereign Cloud partitions are separate clouds with their own
# credentials; an installation that mimics one lists its regions in KHOA_REGIONS.
AWS_COMMERCIAL_REGIONS: tuple[str, ...] = (
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
)

# us-east-1, us-gov-west-1, eusc-de-east-1: what a region name looks like (lowercase, dash-separated).
REGION_SYNTAX = re.compile(r"^[a-z]{2,4}(-[a-z]+)+-\d+$")


def parse_regions(raw: str) -> tuple[str, ...]:
    """``KHOA_REGIONS``: comma-separated region names; refuses empty lists and malformed names."""
    regions = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if not regions:
        raise ValueError("KHOA_REGIONS must name at least one region")
    bad = [region for region in regions if not REGION_SYNTAX.match(region)]
    if bad:
        raise ValueError(f"KHOA_REGIONS: not a region name: {', '.join(repr(b) for b in bad)}")
    return regions
