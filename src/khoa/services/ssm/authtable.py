"""The Parameter Store authorisation table: every SSM operation Khoa serves and the action it is
authorised as.

All are checked by :func:`khoa.services.ssm.authz.authorize_request`: ``ssm:<Operation>`` on each
parameter the request names (``Name``, every one of ``Names``, or ``ResourceId``), on the path's ARN for
GetParametersByPath and on ``*`` for DescribeParameters. The list is spelled out so that a new handler
without an entry stops the service from building.
"""

from __future__ import annotations

from khoa.services.authorization import AuthorizationTable, same_check
from khoa.services.ssm import authz

OPERATIONS = (
    "PutParameter",
    "GetParameter",
    "GetParameters",
    "GetParametersByPath",
    "GetParameterHistory",
    "DescribeParameters",
    "DeleteParameter",
    "DeleteParameters",
    "LabelParameterVersion",
    "UnlabelParameterVersion",
    "AddTagsToResource",
    "RemoveTagsFromResource",
    "ListTagsForResource",
)


def table() -> AuthorizationTable:
    return AuthorizationTable("ssm", same_check("ssm", authz.authorize_request, OPERATIONS))
