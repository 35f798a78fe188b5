"""Cryptographic operations: encryption, data keys, signatures, MACs, key agreement, randomness."""

from __future__ import annotations

from typing import Any

from khoa.crypto import ciphertext, keymaterial
from khoa.crypto.keymaterial import CryptoFailure
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.kms import errors, external, specs
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.grants import check_grant_tokens
from khoa.services.kms.resolve import require_usable, resolve_key, state_error
from khoa.services.kms.store import KeyRecord

_DATA_KEY_BYTES = {"AES_256": 32, "AES_128": 16}
_KEY_PAIR_SPECS = {
    **{s: s for s in specs.RSA_SPECS},
    **{s: s for s in specs.ECC_SPECS},
    "ECC_NIST_EDWARDS25519": "ECC_NIST_EDWARDS25519",
}


def _common(ctx: RequestContext, params: dict[str, Any]) -> None:
    check_grant_tokens(params.get("GrantTokens", []))
    if params.get("Recipient"):
        raise errors.unsupported("Nitro Enclaves attestation (Recipient) is not supported by Khoa.")


def _finish_dry_run(params: dict[str, Any]) -> None:
    if params.get("DryRun"):
        raise errors.dry_run()


def _current_material(kms: KmsBackend, ctx: RequestContext, key: KeyRecord) -> tuple[str, bytes]:
    version_id = key.current_version_id
    material = kms.store.keys.material(key.key_id, version_id) if version_id else None
    if version_id is None or material is None:
        raise errors.invalid_state(f"{key.arn} is pending import.")
    return version_id, material


def _encrypt_symmetric(
    kms: KmsBackend, ctx: RequestContext, key: KeyRecord, plaintext: bytes, context: dict[str, str] | None
) -> tuple[bytes, str]:
    version_id, material = _current_material(kms, ctx, key)
    if key.origin == external.ORIGIN:
        return external.encrypt(kms, ctx, key, material, version_id, plaintext, context), version_id
    return ciphertext.encrypt(material, key.key_id, version_id, plaintext, context), version_id


def _encryption_key(
    kms: KmsBackend, ctx: RequestContext, ref: str, algorithm: str, operation: str
) -> KeyRecord:
    key = resolve_key(kms, ctx, ref)
    require_usable(key, "ENCRYPT_DECRYPT", operation)
    allowed = specs.algorithms(key.key_spec, key.key_usage).get("EncryptionAlgorithms", [])
    if algorithm not in allowed:
        raise errors.invalid_key_usage(f"{key.arn} does not support the encryption algorithm {algorithm}.")
    return key


def _encrypt_with(
    kms: KmsBackend,
    ctx: RequestContext,
    key: KeyRecord,
    algorithm: str,
    plaintext: bytes,
    context: dict[str, str] | None,
) -> tuple[bytes, str | None]:
    if key.key_spec == specs.SYMMETRIC:
        return _encrypt_symmetric(kms, ctx, key, plaintext, context)
    if context:
        raise errors.validation("EncryptionContext is not supported with asymmetric KMS keys.")
    limit = specs.rsa_max_plaintext(key.key_spec, algorithm)
    if len(plaintext) > limit:
        raise errors.validation(
            f"Algorithm {algorithm} and key spec {key.key_spec} cannot encrypt data "
            f"larger than {limit} bytes."
        )
    _, private = _current_material(kms, ctx, key)
    return keymaterial.rsa_encrypt(private, algorithm, plaintext), None


def encrypt(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _common(ctx, params)
    algorithm = params.get("EncryptionAlgorithm", specs.SYMMETRIC)
    key = _encryption_key(kms, ctx, params["KeyId"], algorithm, "Encrypt")
    _finish_dry_run(params)
    blob, _ = _encrypt_with(kms, ctx, key, algorithm, params["Plaintext"], params.get("EncryptionContext"))
    return {"CiphertextBlob": blob, "KeyId": key.arn, "EncryptionAlgorithm": algorithm}


def _decrypt(
    kms: KmsBackend,
    ctx: RequestContext,
    blob: bytes,
    key_ref: str | None,
    algorithm: str,
    context: dict[str, str] | None,
    operation: str,
) -> tuple[KeyRecord, bytes, str | None]:
    """Open a ciphertext; returns the key, the plaintext and the material id that was used."""
    named = resolve_key(kms, ctx, key_ref) if key_ref else None
    if algorithm != specs.SYMMETRIC:
        if named is None:
            raise errors.validation("KeyId is required to decrypt with an asymmetric KMS key.")
        require_usable(named, "ENCRYPT_DECRYPT", operation)
        if algorithm not in specs.algorithms(named.key_spec, named.key_usage).get("EncryptionAlgorithms", []):
            raise errors.invalid_key_usage(
                f"{named.arn} does not support the encryption algorithm {algorithm}."
            )
        _, private = _current_material(kms, ctx, named)
        try:
            return named, keymaterial.rsa_decrypt(private, algorithm, blob), None
        except CryptoFailure:
            raise errors.invalid_ciphertext() from None
    try:
        parsed = ciphertext.parse(blob)
    except ciphertext.InvalidCiphertext:
        raise errors.invalid_ciphertext() from None
    key = named if named is not None and named.key_id == parsed.key_id else None
    if key is None:
        # A blob naming no key of this account and region is corrupt (its key id is not
        # authenticated until the key is found), so it is an invalid ciphertext, not a missing key.
        key = kms.store.keys.by_blob(ctx.region, parsed.key_id)
        if key is None:
            raise errors.invalid_ciphertext()
        if named is not None:
            raise errors.incorrect_key()
    require_usable(key, "ENCRYPT_DECRYPT", operation)
    if key.key_spec != specs.SYMMETRIC:
        raise errors.invalid_key_usage(f"{key.arn} does not support the encryption algorithm {algorithm}.")
    cipher = kms.store.keys.cipher(key.key_id, parsed.material_id)
    if cipher is None:
        raise errors.invalid_ciphertext()
    try:
        opened = ciphertext.decrypt(cipher, parsed, context)
    except ciphertext.InvalidCiphertext:
        raise errors.invalid_ciphertext() from None
    if key.origin == external.ORIGIN:
        material = kms.store.keys.material(key.key_id, parsed.material_id)
        if material is None:  # (deleted since the cipher was made)
            raise errors.invalid_ciphertext()
        opened = external.decrypt(kms, ctx, key, material, parsed.material_id, opened, context)
    return key, opened, parsed.material_id


def decrypt(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _common(ctx, params)
    if "CiphertextBlob" not in params:
        raise errors.validation(
            "1 validation error detected: Value null at 'ciphertextBlob' failed to "
            "satisfy constraint: Member must not be null"
        )
    algorithm = params.get("EncryptionAlgorithm", specs.SYMMETRIC)
    key, plaintext, material_id = _decrypt(
        kms,
        ctx,
        params["CiphertextBlob"],
        params.get("KeyId"),
        algorithm,
        params.get("EncryptionContext"),
        "Decrypt",
    )
    _finish_dry_run(params)
    result: dict[str, Any] = {"KeyId": key.arn, "Plaintext": plaintext, "EncryptionAlgorithm": algorithm}
    if material_id:
        result["KeyMaterialId"] = material_id
    return result


def re_encrypt(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _common(ctx, params)
    if "CiphertextBlob" not in params:
        raise errors.validation(
            "1 validation error detected: Value null at 'ciphertextBlob' failed to "
            "satisfy constraint: Member must not be null"
        )
    source_algorithm = params.get("SourceEncryptionAlgorithm", specs.SYMMETRIC)
    destination_algorithm = params.get("DestinationEncryptionAlgorithm", specs.SYMMETRIC)
    source, plaintext, source_material = _decrypt(
        kms,
        ctx,
        params["CiphertextBlob"],
        params.get("SourceKeyId"),
        source_algorithm,
        params.get("SourceEncryptionContext"),
        "ReEncrypt",
    )
    destination = _encryption_key(kms, ctx, params["DestinationKeyId"], destination_algorithm, "ReEncrypt")
    _finish_dry_run(params)
    blob, destination_material = _encrypt_with(
        kms, ctx, destination, destination_algorithm, plaintext, params.get("DestinationEncryptionContext")
    )
    result: dict[str, Any] = {
        "CiphertextBlob": blob,
        "SourceKeyId": source.arn,
        "KeyId": destination.arn,
        "SourceEncryptionAlgorithm": source_algorithm,
        "DestinationEncryptionAlgorithm": destination_algorithm,
    }
    if source_material:
        result["SourceKeyMaterialId"] = source_material
    if destination_material:
        result["DestinationKeyMaterialId"] = destination_material
    return result


def _data_key_size(params: dict[str, Any]) -> int:
    count = params.get("NumberOfBytes")
    spec = params.get("KeySpec")
    if (count is None) == (spec is None):
        raise errors.validation("Please specify either number of bytes or key spec.")
    return _DATA_KEY_BYTES[spec] if spec else int(count or 0)


def _symmetric_key(kms: KmsBackend, ctx: RequestContext, ref: str, operation: str) -> KeyRecord:
    key = resolve_key(kms, ctx, ref)
    require_usable(key, "ENCRYPT_DECRYPT", operation)
    if key.key_spec != specs.SYMMETRIC:
        raise errors.invalid_key_usage(
            f"{key.arn} key spec is {key.key_spec}, which is not valid for "
            f"{operation}: a symmetric encryption KMS key is required."
        )
    return key


def generate_data_key(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _common(ctx, params)
    size = _data_key_size(params)
    key = _symmetric_key(kms, ctx, params["KeyId"], "GenerateDataKey")
    _finish_dry_run(params)
    plaintext = keymaterial.random_bytes(size)
    blob, version_id = _encrypt_symmetric(kms, ctx, key, plaintext, params.get("EncryptionContext"))
    return {"CiphertextBlob": blob, "Plaintext": plaintext, "KeyId": key.arn, "KeyMaterialId": version_id}


def generate_data_key_without_plaintext(
    kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    result = generate_data_key(kms, ctx, params)
    del result["Plaintext"]
    return result


def _generate_pair(kms: KmsBackend, spec: str) -> bytes:
    if spec in specs.RSA_SPECS:
        return kms.generate_rsa(specs.RSA_SPECS[spec])
    if spec in specs.ECC_SPECS:
        return keymaterial.generate_ec(specs.ECC_SPECS[spec])
    return keymaterial.generate_ed25519()


def generate_data_key_pair(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _common(ctx, params)
    pair_spec = params["KeyPairSpec"]
    if pair_spec not in _KEY_PAIR_SPECS:
        raise errors.unsupported(f"KeyPairSpec {pair_spec} is not supported by Khoa.")
    key = _symmetric_key(kms, ctx, params["KeyId"], "GenerateDataKeyPair")
    _finish_dry_run(params)
    private = _generate_pair(kms, pair_spec)
    blob, version_id = _encrypt_symmetric(kms, ctx, key, private, params.get("EncryptionContext"))
    return {
        "PrivateKeyCiphertextBlob": blob,
        "PrivateKeyPlaintext": private,
        "PublicKey": keymaterial.public_key_der(private),
        "KeyId": key.arn,
        "KeyPairSpec": pair_spec,
        "KeyMaterialId": version_id,
    }


def generate_data_key_pair_without_plaintext(
    kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    result = generate_data_key_pair(kms, ctx, params)
    del result["PrivateKeyPlaintext"]
    return result


def generate_random(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("Recipient"):
        raise errors.unsupported("Nitro Enclaves attestation (Recipient) is not supported by Khoa.")
    store_id = params.get("CustomKeyStoreId")
    if store_id:
        if kms.store.custom_key_stores.get(ctx.account_id, ctx.region, store_id) is None:
            raise AWSError(
                "CustomKeyStoreNotFoundException",
                f"Custom key store {store_id} does not exist in this account and Region.",
            )
        # as AWS: random bytes come from an AWS CloudHSM key store only, never from an external one
        raise errors.unsupported(f"{store_id} is an external key store: it cannot generate random bytes.")
    count = params.get("NumberOfBytes")
    if count is None:
        raise errors.validation("NumberOfBytes is required.")
    return {"Plaintext": keymaterial.random_bytes(count)}


def _signing_key(
    kms: KmsBackend, ctx: RequestContext, params: dict[str, Any], operation: str
) -> tuple[KeyRecord, bytes, bool]:
    key = resolve_key(kms, ctx, params["KeyId"])
    require_usable(key, "SIGN_VERIFY", operation)
    algorithm = params["SigningAlgorithm"]
    if algorithm not in specs.algorithms(key.key_spec, key.key_usage).get("SigningAlgorithms", []):
        raise errors.invalid_key_usage(f"Algorithm {algorithm} is incompatible with key spec {key.key_spec}.")
    message_type = params.get("MessageType", "RAW")
    if message_type not in ("RAW", "DIGEST"):
        raise errors.unsupported(f"MessageType {message_type} is not supported for {key.key_spec} keys.")
    is_digest = message_type == "DIGEST"
    message: bytes = params["Message"]
    if is_digest and len(message) != keymaterial.digest_size(algorithm):
        raise errors.validation(f"Digest is invalid length for algorithm {algorithm}.")
    _, private = _current_material(kms, ctx, key)
    return key, private, is_digest


def sign(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _common(ctx, params)
    key, private, is_digest = _signing_key(kms, ctx, params, "Sign")
    _finish_dry_run(params)
    algorithm = params["SigningAlgorithm"]
    signature = keymaterial.sign(private, algorithm, params["Message"], is_digest)
    return {"KeyId": key.arn, "Signature": signature, "SigningAlgorithm": algorithm}


def verify(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _common(ctx, params)
    key, private, is_digest = _signing_key(kms, ctx, params, "Verify")
    _finish_dry_run(params)
    algorithm = params["SigningAlgorithm"]
    if not keymaterial.verify(private, algorithm, params["Message"], is_digest, params["Signature"]):
        raise errors.invalid_signature()
    return {"KeyId": key.arn, "SignatureValid": True, "SigningAlgorithm": algorithm}


def _mac_key(
    kms: KmsBackend, ctx: RequestContext, params: dict[str, Any], operation: str
) -> tuple[KeyRecord, bytes]:
    key = resolve_key(kms, ctx, params["KeyId"])
    require_usable(key, "GENERATE_VERIFY_MAC", operation)
    algorithm = params["MacAlgorithm"]
    if algorithm not in specs.algorithms(key.key_spec, key.key_usage).get("MacAlgorithms", []):
        raise errors.invalid_key_usage(f"Algorithm {algorithm} is incompatible with key spec {key.key_spec}.")
    _, material = _current_material(kms, ctx, key)
    return key, material


def generate_mac(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _common(ctx, params)
    key, material = _mac_key(kms, ctx, params, "GenerateMac")
    _finish_dry_run(params)
    mac = keymaterial.hmac_digest(material, params["MacAlgorithm"], params["Message"])
    return {"Mac": mac, "MacAlgorithm": params["MacAlgorithm"], "KeyId": key.arn}


def verify_mac(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _common(ctx, params)
    key, material = _mac_key(kms, ctx, params, "VerifyMac")
    _finish_dry_run(params)
    expected = keymaterial.hmac_digest(material, params["MacAlgorithm"], params["Message"])
    if not keymaterial.constant_time_equal(expected, params["Mac"]):
        raise errors.invalid_mac()
    return {"KeyId": key.arn, "MacValid": True, "MacAlgorithm": params["MacAlgorithm"]}


def derive_shared_secret(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _common(ctx, params)
    key = resolve_key(kms, ctx, params["KeyId"])
    require_usable(key, "KEY_AGREEMENT", "DeriveSharedSecret")
    _finish_dry_run(params)
    _, private = _current_material(kms, ctx, key)
    try:
        secret = keymaterial.ecdh(private, params["PublicKey"])
    except CryptoFailure as exc:
        raise errors.validation(f"The PublicKey is not valid for {key.key_spec}: {exc}.") from None
    return {
        "KeyId": key.arn,
        "SharedSecret": secret,
        "KeyAgreementAlgorithm": params["KeyAgreementAlgorithm"],
        "KeyOrigin": key.origin,
    }


def get_public_key(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    check_grant_tokens(params.get("GrantTokens", []))
    key = resolve_key(kms, ctx, params["KeyId"])
    problem = state_error(key)
    if problem is not None:
        raise problem
    if not specs.is_asymmetric(key.key_spec):
        raise errors.unsupported(
            f"{key.arn} key spec is {key.key_spec}: GetPublicKey needs an asymmetric KMS key."
        )
    _, private = _current_material(kms, ctx, key)
    result: dict[str, Any] = {
        "KeyId": key.arn,
        "PublicKey": keymaterial.public_key_der(private),
        "CustomerMasterKeySpec": key.key_spec,
        "KeySpec": key.key_spec,
        "KeyUsage": key.key_usage,
    }
    result.update(specs.algorithms(key.key_spec, key.key_usage))
    return result


OPERATIONS = {
    "Encrypt": encrypt,
    "Decrypt": decrypt,
    "ReEncrypt": re_encrypt,
    "GenerateDataKey": generate_data_key,
    "GenerateDataKeyWithoutPlaintext": generate_data_key_without_plaintext,
    "GenerateDataKeyPair": generate_data_key_pair,
    "GenerateDataKeyPairWithoutPlaintext": generate_data_key_pair_without_plaintext,
    "GenerateRandom": generate_random,
    "Sign": sign,
    "Verify": verify,
    "GenerateMac": generate_mac,
    "VerifyMac": verify_mac,
    "DeriveSharedSecret": derive_shared_secret,
    "GetPublicKey": get_public_key,
}
