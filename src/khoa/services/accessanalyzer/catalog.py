"""What ValidatePolicy knows about the services Khoa serves: their actions (botocore's operations, plus
the permission-only actions IAM policies use) and their condition keys (the Service Authorization
Reference's lists), and the global ``aws:`` condition keys."""

from __future__ import annotations

import functools

from khoa.protocol.model import load_service_model

# IAM action prefix -> botocore model name
SERVICES = {
    "kms": "kms",
    "secretsmanager": "secretsmanager",
    "ssm": "ssm",
    "iam": "iam",
    "sts": "sts",
    "cloudtrail": "cloudtrail",
    "access-analyzer": "accessanalyzer",
}

# Actions that are permissions without an operation of the same name, and operations that are not
# actions (KMS's ReEncrypt is authorised as ReEncryptFrom and ReEncryptTo).
_EXTRA_ACTIONS = {
    "kms": {"ReEncryptFrom", "ReEncryptTo"},
    "iam": {"PassRole", "CreateServiceLinkedRole"},
    "sts": {"TagSession", "SetSourceIdentity", "SetContext"},
}
_NOT_ACTIONS = {"kms": {"ReEncrypt"}}

_GLOBAL_KEYS = {
    "aws:calledvia",
    "aws:calledviafirst",
    "aws:calledvialast",
    "aws:currenttime",
    "aws:epochtime",
    "aws:federatedprovider",
    "aws:multifactorauthage",
    "aws:multifactorauthpresent",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalisawsservice",
    "aws:principalorgid",
    "aws:principalorgpaths",
    "aws:principalservicename",
    "aws:principalservicenameslist",
    "aws:principaltype",
    "aws:referer",
    "aws:requestedregion",
    "aws:resourceaccount",
    "aws:resourceorgid",
    "aws:resourceorgpaths",
    "aws:securetransport",
    "aws:sourceaccount",
    "aws:sourcearn",
    "aws:sourceidentity",
    "aws:sourceip",
    "aws:sourceorgid",
    "aws:sourceorgpaths",
    "aws:sourceowner",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "aws:tagkeys",
    "aws:tokenissuetime",
    "aws:useragent",
    "aws:userid",
    "aws:username",
    "aws:viaawsservice",
    "aws:vpcsourceip",
    "aws:ec2instancesourcevpc",
    "aws:ec2instancesourceprivateipv4",
}
_GLOBAL_PREFIXES = ("aws:principaltag/", "aws:requesttag/", "aws:resourcetag/")

_SERVICE_KEYS = {
    "kms": {
        "kms:bypasspolicylockoutsafetycheck",
        "kms:calleraccount",
        "kms:customermasterkeyspec",
        "kms:customermasterkeyusage",
        "kms:datakeypairspec",
        "kms:encryptionalgorithm",
        "kms:encryptioncontextkeys",
        "kms:expirationmodel",
        "kms:grantconstrainttype",
        "kms:grantisforawsresource",
        "kms:grantoperations",
        "kms:granteeprincipal",
        "kms:granteeserviceprincipal",
        "kms:keyagreementalgorithm",
        "kms:keyorigin",
        "kms:keyspec",
        "kms:keyusage",
        "kms:macalgorithm",
        "kms:messagetype",
        "kms:multiregion",
        "kms:multiregionkeytype",
        "kms:primaryregion",
        "kms:reencryptonsamekey",
        "kms:recipientattestation:imagesha384",
        "kms:replicaregion",
        "kms:requestalias",
        "kms:resourcealiases",
        "kms:retiringprincipal",
        "kms:retiringserviceprincipal",
        "kms:rotationperiodindays",
        "kms:schedulekeydeletionpendingwindowindays",
        "kms:signingalgorithm",
        "kms:trailingdayswithoutkeyusage",
        "kms:validto",
        "kms:viaservice",
        "kms:wrappingalgorithm",
        "kms:wrappingkeyspec",
    },
    "secretsmanager": {
        "secretsmanager:addreplicaregions",
        "secretsmanager:blockpublicpolicy",
        "secretsmanager:description",
        "secretsmanager:externalsecretrotationrolearn",
        "secretsmanager:forcedeletewithoutrecovery",
        "secretsmanager:forceoverwritereplicasecret",
        "secretsmanager:kmskeyarn",
        "secretsmanager:kmskeyid",
        "secretsmanager:modifyrotationrules",
        "secretsmanager:name",
        "secretsmanager:recoverywindowindays",
        "secretsmanager:rotateimmediately",
        "secretsmanager:rotationlambdaarn",
        "secretsmanager:secretid",
        "secretsmanager:secretprimaryregion",
        "secretsmanager:type",
        "secretsmanager:versionid",
        "secretsmanager:versionstage",
        "secretsmanager:resource/allowrotationlambdaarn",
        "secretsmanager:resource/type",
    },
    "ssm": {"ssm:overwrite", "ssm:policies", "ssm:recursive"},
    "iam": {
        "iam:associatedresourcearn",
        "iam:awsservicename",
        "iam:organizationspolicyid",
        "iam:passedtoservice",
        "iam:permissionsboundary",
        "iam:policyarn",
    },
    "sts": {
        "sts:durationseconds",
        "sts:externalid",
        "sts:rolesessionname",
        "sts:sourceidentity",
        "sts:transitivetagkeys",
    },
    "cloudtrail": set(),
    "access-analyzer": set(),
}
_SERVICE_PREFIXES = {
    "kms": ("kms:encryptioncontext:", "kms:recipientattestation:pcr"),
    "secretsmanager": ("secretsmanager:resourcetag/",),
    "ssm": ("ssm:resourcetag/",),
    "iam": ("iam:resourcetag/",),
    "sts": (),
    "cloudtrail": (),
    "access-analyzer": (),
}


@functools.cache
def actions(prefix: str) -> frozenset[str]:
    """The lower-cased action names of a served service (empty for a service Khoa does not serve)."""
    model = SERVICES.get(prefix)
    if model is None:
        return frozenset()
    names = set(load_service_model(model)["operations"]) | _EXTRA_ACTIONS.get(prefix, set())
    names -= _NOT_ACTIONS.get(prefix, set())
    return frozenset(name.lower() for name in names)


@functools.cache
def action_names(prefix: str) -> tuple[str, ...]:
    """The action names of a served service as AWS spells them, sorted."""
    model = SERVICES.get(prefix)
    if model is None:
        return ()
    names = set(load_service_model(model)["operations"]) | _EXTRA_ACTIONS.get(prefix, set())
    return tuple(sorted(names - _NOT_ACTIONS.get(prefix, set())))


def global_key_known(key: str) -> bool:
    lowered = key.lower()
    return lowered in _GLOBAL_KEYS or lowered.startswith(_GLOBAL_PREFIXES)


def service_key_known(prefix: str, key: str) -> bool:
    lowered = key.lower()
    return lowered in _SERVICE_KEYS[prefix] or lowered.startswith(_SERVICE_PREFIXES[prefix])
