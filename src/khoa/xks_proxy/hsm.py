"""The PKCS#11 token behind the proxy: keys addressed by label, AES-GCM done inside the token.

One logged-in session serves every request, under a lock (a PKCS#11 session runs one operation at a
time). When the token disappears or the session breaks, the session is dropped and reopened on the next
call; a PIN the token rejected is never retried (retries would lock the token).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.mechanisms import GCMParams

from khoa.xks_proxy.errors import XksError, internal, invalid_ciphertext, key_not_found

IV_BYTES = 12
TAG_BYTES = 16
_T = TypeVar("_T")

# Failures that mean the session (or the token) is gone: drop the session, reopen next time.
_SESSION_LOST: tuple[type[Exception], ...] = (
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.TokenNotRecognised,
    p11.SessionClosed,
    p11.SessionHandleInvalid,
    p11.UserNotLoggedIn,
    p11.DeviceError,
)
_PIN_REFUSED: tuple[type[Exception], ...] = (p11.PinIncorrect, p11.PinLocked, p11.PinInvalid, p11.PinExpired)

_USAGES = (
    (Attribute.ENCRYPT, "ENCRYPT"),
    (Attribute.DECRYPT, "DECRYPT"),
    (Attribute.WRAP, "WRAP"),
    (Attribute.UNWRAP, "UNWRAP"),
    (Attribute.SIGN, "SIGN"),
    (Attribute.VERIFY, "VERIFY"),
    (Attribute.DERIVE, "DERIVE"),
)


class HsmError(Exception):
    """The module, token or PIN cannot be used (an operator's problem, said in one line)."""


@dataclass(frozen=True)
class KeyInfo:
    key_spec: str  # AES_256, or what the key is otherwise (AES_128, GENERIC_SECRET, ...)
    usages: list[str]
    enabled: bool


@dataclass(frozen=True)
class TokenHealth:
    status: str  # ACTIVE | DEGRADED | UNAVAILABLE
    manufacturer: str
    model: str
    serial: str
    detail: str


def load_module(path: str) -> Any:
    """Load a PKCS#11 module (``pkcs11.lib``); one line of error when it cannot be loaded."""
    if not os.path.exists(path):
        raise HsmError(f"the PKCS#11 module {path} does not exist (is the HSM client installed?)")
    try:
        return pkcs11.lib(path)
    except (p11.PKCS11Error, OSError, RuntimeError) as exc:
        raise HsmError(f"cannot load the PKCS#11 module {path}: {type(exc).__name__} {exc}") from None


def _key_spec(key: Any) -> str:
    key_type = key[Attribute.KEY_TYPE]
    if key_type == KeyType.AES:
        return f"AES_{int(key[Attribute.VALUE_LEN]) * 8}"
    name = getattr(key_type, "name", str(key_type))
    return str(name)


def _attr(key: Any, attribute: Attribute, default: Any) -> Any:
    try:
        return key[attribute]
    except (p11.AttributeTypeInvalid, p11.AttributeSensitive, KeyError):
        return default


def _gcm(iv: bytes, aad: bytes) -> GCMParams:
    params = GCMParams(iv[:IV_BYTES], aad, TAG_BYTES * 8)
    params.nonce = iv  # the spec allows 16-byte IVs; GCMParams' constructor checks for 12 only
    return params


class Token:
    """A token found by label in a loaded module, used with the user PIN."""

    def __init__(self, module: Any, label: str, pin: str) -> None:
        self._module = module
        self.label = label
        self._pin = pin
        self._session: Any = None
        self._probe: Any = None  # a session-only AES key for deep health checks
        self._pin_refused = ""
        self._lock = threading.Lock()

    # -- session management -------------------------------------------------------------------
    def _token(self) -> Any:
        try:
            return self._module.get_token(token_label=self.label)
        except p11.NoSuchToken:
            raise HsmError(f"no token labelled '{self.label}' is present") from None
        except p11.MultipleTokensReturned:
            raise HsmError(f"several tokens are labelled '{self.label}'") from None

    def _open(self, rw: bool = False) -> Any:
        if self._pin_refused:
            raise HsmError(self._pin_refused)
        token = self._token()
        try:
            return token.open(rw=rw, user_pin=self._pin)
        except p11.UserAlreadyLoggedIn:
            return token.open(rw=rw)
        except _PIN_REFUSED as exc:
            self._pin_refused = (
                f"the token '{self.label}' refused the PIN ({type(exc).__name__}); "
                "not retrying, to avoid locking it"
            )
            raise HsmError(self._pin_refused) from None

    def _session_for_use(self) -> Any:
        if self._session is None:
            session = self._open()
            self._probe = session.generate_key(
                KeyType.AES,
                256,
                id=os.urandom(16),  # no label: no request can address the probe
                store=False,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
            )
            self._session = session
        return self._session

    def _drop(self) -> None:
        session, self._session, self._probe = self._session, None, None
        if session is not None:
            with contextlib.suppress(p11.PKCS11Error):
                session.close()

    def _run(self, work: Callable[[Any], _T]) -> _T:
        with self._lock:
            try:
                session = self._session_for_use()
            except HsmError as exc:
                raise internal(f"the HSM is unavailable: {exc}") from None
            except p11.PKCS11Error as exc:
                self._drop()
                raise internal(f"the HSM is unavailable: {type(exc).__name__}") from None
            try:
                return work(session)
            except _SESSION_LOST as exc:
                self._drop()
                raise internal(f"the HSM session was lost: {type(exc).__name__}") from None

    def check(self) -> None:
        """Open (or reopen) the session now; raises :class:`HsmError` when the token cannot be used."""
        with self._lock:
            try:
                self._session_for_use()
            except p11.PKCS11Error as exc:
                self._drop()
                raise HsmError(f"cannot use the token '{self.label}': {type(exc).__name__}") from None

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- keys -----------------------------------------------------------------------------------
    @staticmethod
    def _find(session: Any, key_id: str) -> Any:
        try:
            return session.get_key(object_class=ObjectClass.SECRET_KEY, label=key_id)
        except p11.NoSuchKey:
            raise key_not_found(key_id) from None
        except p11.MultipleObjectsReturned:
            raise XksError(
                "InvalidStateException", f"Several secret keys in the token are labelled '{key_id}'."
            ) from None

    def key_info(self, key_id: str) -> KeyInfo:
        def work(session: Any) -> KeyInfo:
            key = self._find(session, key_id)
            usages = [name for attribute, name in _USAGES if _attr(key, attribute, False)]
            return KeyInfo(key_spec=_key_spec(key), usages=usages, enabled=True)

        return self._run(work)

    def _usable_key(self, session: Any, key_id: str, usage: Attribute, name: str) -> Any:
        key = self._find(session, key_id)
        if _key_spec(key) != "AES_256":
            raise XksError("InvalidKeyUsageException", f"The key '{key_id}' is not an AES-256 key.")
        if not _attr(key, usage, False):
            raise XksError("InvalidKeyUsageException", f"The key '{key_id}' does not allow {name}.")
        return key

    def encrypt(self, key_id: str, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes, bytes]:
        """AES-256-GCM in the token with an IV from the token's RNG: (iv, ciphertext, tag)."""

        def work(session: Any) -> tuple[bytes, bytes, bytes]:
            key = self._usable_key(session, key_id, Attribute.ENCRYPT, "encryption")
            iv = session.generate_random(IV_BYTES * 8)
            try:
                sealed = key.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=_gcm(iv, aad))
            except _SESSION_LOST:
                raise
            except p11.PKCS11Error as exc:
                raise internal(f"the HSM refused to encrypt: {type(exc).__name__}") from None
            if len(sealed) != len(plaintext) + TAG_BYTES:
                raise internal("the HSM returned an AES-GCM output of an unexpected length")
            return iv, sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]

        return self._run(work)

    def decrypt(self, key_id: str, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
        def work(session: Any) -> bytes:
            key = self._usable_key(session, key_id, Attribute.DECRYPT, "decryption")
            try:
                return bytes(
                    key.decrypt(ciphertext + tag, mechanism=Mechanism.AES_GCM, mechanism_param=_gcm(iv, aad))
                )
            except _SESSION_LOST:
                raise
            except (
                p11.EncryptedDataInvalid,
                p11.EncryptedDataLenRange,
                p11.SignatureInvalid,
                p11.FunctionFailed,
                p11.MechanismParamInvalid,
                p11.ArgumentsBad,
                p11.DataInvalid,
                p11.GeneralError,
            ):
                raise invalid_ciphertext() from None
            except p11.PKCS11Error as exc:
                raise internal(f"the HSM refused to decrypt: {type(exc).__name__}") from None

        return self._run(work)

    # -- health ---------------------------------------------------------------------------------
    def health(self) -> TokenHealth:
        """ACTIVE when the token is present, the session logged in and a probe round trip works."""
        manufacturer, model, serial = "unknown", "unknown", self.label
        with self._lock:
            try:
                token = self._token()
                manufacturer = str(token.manufacturer_id).strip() or manufacturer
                model = str(token.model).strip() or model
                raw_serial = token.serial
                serial = (
                    raw_serial.decode(errors="replace") if isinstance(raw_serial, bytes) else str(raw_serial)
                ).strip() or serial
                session = self._session_for_use()
                probe = self._probe
                iv = session.generate_random(IV_BYTES * 8)
                data = b"khoa xks proxy health probe"
                sealed = probe.encrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=_gcm(iv, b"h"))
                opened = probe.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=_gcm(iv, b"h"))
                if bytes(opened) != data:
                    return TokenHealth("DEGRADED", manufacturer, model, serial, "probe round trip mismatch")
                return TokenHealth("ACTIVE", manufacturer, model, serial, "")
            except HsmError as exc:
                return TokenHealth("UNAVAILABLE", manufacturer, model, serial, str(exc))
            except p11.PKCS11Error as exc:
                self._drop()
                return TokenHealth("UNAVAILABLE", manufacturer, model, serial, type(exc).__name__)

    # -- administration -------------------------------------------------------------------------
    def create_key(self, key_id: str) -> KeyInfo:
        """A new AES-256 key stored in the token: sensitive, never extractable, encrypt/decrypt only."""
        with self._lock:
            session = self._open(rw=True)
            try:
                if list(session.get_objects({Attribute.LABEL: key_id})):
                    raise HsmError(f"an object labelled '{key_id}' already exists in the token")
                key = session.generate_key(
                    KeyType.AES,
                    256,
                    label=key_id,
                    id=os.urandom(16),
                    store=True,
                    capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                    template={
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.PRIVATE: True,
                        Attribute.MODIFIABLE: False,
                        Attribute.WRAP: False,
                        Attribute.UNWRAP: False,
                        Attribute.SIGN: False,
                        Attribute.VERIFY: False,
                        Attribute.DERIVE: False,
                    },
                )
                usages = [name for attribute, name in _USAGES if _attr(key, attribute, False)]
                return KeyInfo(key_spec=_key_spec(key), usages=usages, enabled=True)
            except p11.PKCS11Error as exc:
                raise HsmError(f"the token refused to create the key: {type(exc).__name__}") from None
            finally:
                session.close()
