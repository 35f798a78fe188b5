"""The Parameter Store authorisation table: every SSM operation Khoa serves and the action it is
authorised as.

All are checked by :func:`khoa.services.ssm.authz.authorize_request`: ``ssm:<Operation>`` on each
parameter the request names (``Name``, every one of ``Names``, or ``ResourceId``), on the path's ARN for
GetParametersByPath and on ``*`` for DescribeParameters. The list is spelled out so that a new handler
without an entry stops the service from building.
"""

from __future__ import annotations

from functools import partial

from khoa.services.authorization import AuthorizationTable, same_check
from khoa.services.ssm import authz
from khoa.services.ssm.backend import ParametersBackend

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


def table(ssm: ParametersBackend) -> AuthorizationTable:
    """The table whose rules authorise with ``ssm``'s authoriser and read its parameters' tags."""
    return AuthorizationTable("ssm", same_check("ssm", partial(authz.authorize_request, ssm), OPERATIONS))
