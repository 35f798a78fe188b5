"""The XKS proxy's errors: the spec's ``errorName`` values with their HTTP statuses.

Every message is printable ASCII and short (the spec caps ``errorMessage`` at 512 characters), and
never contains key material, plaintext or the PIN.
"""

from __future__ import annotations

STATUS = {
    "ValidationException": 400,
    "InvalidStateException": 400,
    "InvalidCiphertextException": 400,
    "InvalidKeyUsageException": 400,
    "AuthenticationFailedException": 401,
    "AccessDeniedException": 403,
    "KeyNotFoundException": 404,
    "InvalidUriPathException": 404,
    "MethodNotAllowedException": 405,
    "ThrottlingException": 429,
    "InternalException": 500,
    "UnsupportedOperationException": 501,
    "DependencyTimeoutException": 503,
}


class XksError(Exception):
    """A refusal returned as ``{"errorName": ..., "errorMessage": ...}`` with the spec's status."""

    def __init__(self, name: str, message: str = "") -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.status = STATUS[name]
        printable = "".join(ch if " " <= ch <= "~" else "?" for ch in message)
        self.message = printable[:511]

    def body(self) -> dict[str, str]:
        out = {"errorName": self.name}
        if self.message:
            out["errorMessage"] = self.message
        return out


def validation(message: str) -> XksError:
    return XksError("ValidationException", message)


def invalid_ciphertext(message: str = "") -> XksError:
    return XksError(
        "InvalidCiphertextException",
        message
        or "The ciphertext, initialization vector, additional authenticated data, ciphertext metadata "
        "or authentication tag is corrupted, missing or otherwise invalid.",
    )


def key_not_found(key_id: str) -> XksError:
    return XksError("KeyNotFoundException", f"No AES key labelled '{key_id}' in the token.")


def internal(message: str) -> XksError:
    return XksError("InternalException", message)
