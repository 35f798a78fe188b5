"""Shamir's secret sharing over GF(2^8), byte by byte (the scheme Vault's ``shamir`` package uses).

No maintained, vetted implementation exists on PyPI (``cryptography`` has none; the packages there are
unmaintained or unreviewed), so this module is small enough to read whole. The field is AES's:
GF(2)[x] / (x^8 + x^4 + x^3 + x + 1), and tests/unit/test_shamir.py checks it against FIPS-197's
published products. Each byte of the secret is the constant term of its own random polynomial of
degree ``threshold - 1``; a share is the polynomials' values at one non-zero x, followed by that x
(Vault's layout). Any ``threshold`` shares give the secret by Lagrange interpolation at 0; fewer leave
every byte uniformly distributed.

Timing: multiplication uses log/exp tables (indexing by secret-dependent values); the combine runs
once per unseal on the server's own memory, which is Vault's trade-off too.
"""

from __future__ import annotations

import secrets

_EXP = [0] * 512
_LOG = [0] * 256


def _init_tables() -> None:
    value = 1
    for power in range(255):
        _EXP[power] = value
        _LOG[value] = power
        # multiply by the generator 3: value * 2 xor value, reduced by the AES polynomial
        doubled = value << 1
        if doubled & 0x100:
            doubled ^= 0x11B
        value = doubled ^ value
    for power in range(255, 512):
        _EXP[power] = _EXP[power - 255]


_init_tables()

MAX_SHARES = 255


class ShamirError(ValueError):
    """Bad parameters or shares that cannot be combined."""


def gf_mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def gf_div(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("division by zero in GF(2^8)")
    if a == 0:
        return 0
    return _EXP[(_LOG[a] - _LOG[b]) % 255]


def _evaluate(coefficients: list[int], x: int) -> int:
    """Horner's rule; ``coefficients[0]`` is the constant term."""
    result = 0
    for coefficient in reversed(coefficients):
        result = gf_mul(result, x) ^ coefficient
    return result


def split(secret: bytes, shares: int, threshold: int) -> list[bytes]:
    """``shares`` shares of ``secret``, any ``threshold`` of which recover it."""
    if not secret:
        raise ShamirError("cannot split an empty secret")
    if not 2 <= threshold <= shares <= MAX_SHARES:
        raise ShamirError(
            f"need 2 <= key threshold <= key shares <= {MAX_SHARES} "
            f"(got {shares} shares, threshold {threshold})"
        )
    xs = list(range(1, 256))
    # distinct random x coordinates, so a share's x says nothing about how many shares there are
    chosen = [xs.pop(secrets.randbelow(len(xs))) for _ in range(shares)]
    out = [bytearray() for _ in range(shares)]
    for byte in secret:
        coefficients = [byte, *(secrets.randbelow(256) for _ in range(threshold - 1))]
        for index, x in enumerate(chosen):
            out[index].append(_evaluate(coefficients, x))
    return [bytes(share) + bytes([x]) for share, x in zip(out, chosen, strict=True)]


def combine(shares: list[bytes]) -> bytes:
    """The secret from shares (at least the threshold of them, else a wrong value: check it)."""
    if len(shares) < 2:
        raise ShamirError("at least two shares are needed")
    length = len(shares[0])
    if length < 2 or any(len(share) != length for share in shares):
        raise ShamirError("the shares differ in length (they are not from the same split)")
    xs = [share[-1] for share in shares]
    if 0 in xs or len(set(xs)) != len(xs):
        raise ShamirError("a share is repeated or malformed")
    secret = bytearray()
    for position in range(length - 1):
        value = 0
        for i, x_i in enumerate(xs):
            # Lagrange basis polynomial i evaluated at 0: prod x_j / (x_j - x_i); minus is xor
            basis = 1
            for j, x_j in enumerate(xs):
                if i != j:
                    basis = gf_mul(basis, gf_div(x_j, x_j ^ x_i))
            value ^= gf_mul(shares[i][position], basis)
        secret.append(value)
    return bytes(secret)
