"""Console pages for Parameter Store: the parameter tree by path, a parameter's history and labels,
revealing a SecureString value, and putting, labelling and deleting parameters.

Everything goes through the SSM API as the signed-in principal. AWS has no call that lists the
"folders" under a path, so they are derived from a bounded recursive DescribeParameters scan (a few
pages, never the whole store) and the page says when the scan stopped before the end. A SecureString
value is decrypted only for an explicit POST and rendered once into that answer, never into a URL,
a notice or a log.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from khoa.webconsole.http import BadRequest, Page, Redirect, Request, Route, page_arguments, page_size

PAGE_SIZE = 50  # DescribeParameters' largest page
FOLDER_SCAN_PAGES = 4  # at most this many recursive pages (of PAGE_SIZE) are read to find sub-paths
HISTORY_PAGE = 50
REVEAL_SECONDS = 30
TYPES = ("String", "StringList", "SecureString")


def normal_path(raw: str) -> str:
    """``a/b``, ``/a/b`` and ``/a/b/`` as ``/a/b/`` (the root as ``/``)."""
    inner = raw.strip().strip("/")
    return "/" + inner + "/" if inner else "/"


def breadcrumbs(path: str) -> list[tuple[str, str]]:
    """(label, path) for the root and each segment of ``path``, the last being the path itself."""
    crumbs = [("/", "/")]
    current = "/"
    for segment in path.strip("/").split("/"):
        if segment:
            current += segment + "/"
            crumbs.append((segment, current))
    return crumbs


def folders_of(names: list[str], path: str) -> list[str]:
    """The sub-paths directly below ``path`` that hold some of ``names`` (recursive scan results).
    Flat names (no leading slash) sit at the root level, so they are leaves, never folders."""
    found: set[str] = set()
    for name in names:
        if not name.startswith("/"):
            continue
        if path != "/" and not name.startswith(path):
            continue
        rest = name[len(path) :]
        if "/" in rest:
            found.add(path + rest.split("/", 1)[0] + "/")
    return sorted(found)


def _path_filter(path: str, option: str) -> list[dict[str, Any]]:
    return [{"Key": "Path", "Option": option, "Values": [path]}]


def _scan_folders(ssm: Any, path: str) -> tuple[list[str], bool]:
    """Sub-paths of ``path`` from a bounded recursive scan; True when the scan was cut short."""
    names: list[str] = []
    token: str | None = None
    for _ in range(FOLDER_SCAN_PAGES):
        answer = ssm.describe_parameters(
            **page_arguments(PAGE_SIZE, token, ParameterFilters=_path_filter(path, "Recursive"))
        )
        names.extend(item["Name"] for item in answer.get("Parameters", []))
        token = answer.get("NextToken")
        if not token:
            return folders_of(names, path), False
    return folders_of(names, path), True


def tree(request: Request) -> Page:
    """One level of the tree: its parameters (one API page) and the folders below it."""
    path = normal_path(request.arg("path", "/"))
    per_page = page_size(request, PAGE_SIZE)
    next_token = request.arg("next")
    ssm = request.client_api.client("ssm")
    answer = ssm.describe_parameters(
        **page_arguments(per_page, next_token, ParameterFilters=_path_filter(path, "OneLevel"))
    )
    folders, partial = _scan_folders(ssm, path)
    query = {"path": path}
    if per_page != PAGE_SIZE:
        query["per_page"] = str(per_page)
    return Page(
        "parameters/tree.html",
        {
            "title": f"Parameters under {path}",
            "path": path,
            "crumbs": breadcrumbs(path),
            "parameters": answer.get("Parameters", []),
            "folders": folders,
            "folders_partial": partial,
            "next_token": answer.get("NextToken"),
            "first": not next_token,
            "base": "/console/parameters?" + urlencode(query),
            "types": TYPES,
        },
    )


def _name(raw: str) -> str:
    name = raw.strip()
    if not name:
        raise BadRequest("Give a parameter name.")
    return name


def _detail_values(request: Request, name: str) -> dict[str, Any] | None:
    """What the detail page shows of ``name`` (no SecureString value), or None when it is not there."""
    ssm = request.client_api.client("ssm")
    found = ssm.describe_parameters(
        ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [name]}], MaxResults=1
    ).get("Parameters", [])
    if not found:
        return None
    meta = found[0]
    value = None
    if meta.get("Type") != "SecureString":
        value = ssm.get_parameter(Name=meta["Name"], WithDecryption=False)["Parameter"]["Value"]
    next_token = request.arg("next")
    history = ssm.get_parameter_history(
        **page_arguments(HISTORY_PAGE, next_token, Name=meta["Name"], WithDecryption=False)
    )
    parent = meta["Name"].rsplit("/", 1)[0] + "/" if meta["Name"].startswith("/") else "/"
    return {
        "title": f"Parameter {meta['Name']}",
        "meta": meta,
        "name": meta["Name"],
        "crumbs": breadcrumbs(normal_path(parent)),
        "value": value,
        "history": history.get("Parameters", []),
        "next_token": history.get("NextToken"),
        "first": not next_token,
        "base": "/console/parameters/detail?name=" + quote(meta["Name"], safe=""),
        "revealed": None,
        "reveal_seconds": REVEAL_SECONDS,
        "types": TYPES,
    }


def _not_found(name: str) -> Page:
    return Page(
        "error.html",
        {"title": "Parameter not found", "message": f"There is no parameter {name} here.", "code": ""},
        status=404,
    )


def detail(request: Request) -> Page:
    name = _name(request.arg("name"))
    values = _detail_values(request, name)
    return Page("parameters/detail.html", values) if values else _not_found(name)


def reveal(request: Request) -> Page:
    """Decrypt and show the current value once (POST only: never a link, never cached)."""
    name = _name(request.field("name"))
    values = _detail_values(request, name)
    if values is None:
        return _not_found(name)
    ssm = request.client_api.client("ssm")
    values["revealed"] = ssm.get_parameter(Name=values["name"], WithDecryption=True)["Parameter"]["Value"]
    return Page("parameters/detail.html", values)


def _detail_url(name: str) -> str:
    return "/console/parameters/detail?name=" + quote(name, safe="")


def put(request: Request) -> Redirect:
    name = _name(request.field("name"))
    kind = request.field("type", "String")
    if kind not in TYPES:
        raise BadRequest("The type must be String, StringList or SecureString.")
    arguments: dict[str, Any] = {
        "Name": name,
        "Value": request.field("value"),
        "Type": kind,
        "Overwrite": request.field("overwrite", "") == "yes",
    }
    description = request.field("description", "").strip()
    if description:
        arguments["Description"] = description
    key_id = request.field("key_id", "").strip()
    if key_id:
        if kind != "SecureString":
            raise BadRequest("A KMS key applies to SecureString parameters only.")
        arguments["KeyId"] = key_id
    answer = request.client_api.client("ssm").put_parameter(**arguments)
    return Redirect(_detail_url(name), notice=f"Parameter saved as version {answer['Version']}.")


def label(request: Request) -> Redirect:
    name = _name(request.field("name"))
    try:
        version = int(request.field("version"))
    except ValueError:
        raise BadRequest("The version must be a whole number.") from None
    labels = [item.strip() for item in request.field("labels").split(",") if item.strip()]
    if not labels:
        raise BadRequest("Give at least one label.")
    answer = request.client_api.client("ssm").label_parameter_version(
        Name=name, ParameterVersion=version, Labels=labels
    )
    invalid = answer.get("InvalidLabels") or []
    notice = f"Labelled version {version}."
    if invalid:
        notice = "These labels were not valid: " + ", ".join(invalid)
    return Redirect(_detail_url(name), notice=notice)


def delete(request: Request) -> Redirect:
    name = _name(request.field("name"))
    request.require_confirmation()
    request.client_api.client("ssm").delete_parameter(Name=name)
    parent = name.rsplit("/", 1)[0] + "/" if name.startswith("/") else "/"
    return Redirect(
        "/console/parameters?" + urlencode({"path": normal_path(parent)}), notice="Parameter deleted."
    )


ROUTES = [
    Route("GET", "/console/parameters", tree),
    Route("GET", "/console/parameters/detail", detail),
    Route("POST", "/console/parameters/reveal", reveal),
    Route("POST", "/console/parameters/put", put),
    Route("POST", "/console/parameters/label", label),
    Route("POST", "/console/parameters/delete", delete),
]
