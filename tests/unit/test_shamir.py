"""Shamir's secret sharing over GF(2^8) (khoa.crypto.shamir): field vectors, known answers, properties."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from khoa.crypto.shamir import ShamirError, combine, gf_div, gf_mul, split


def test_field_matches_fips_197_products() -> None:
    # FIPS-197 section 4.2 and 4.2.1: {57}*{83} = {c1}, {57}*{13} = {fe}; 5.1.1: inverse of {53} is {ca}
    assert gf_mul(0x57, 0x83) == 0xC1
    assert gf_mul(0x57, 0x13) == 0xFE
    assert gf_mul(0x53, 0xCA) == 0x01
    assert gf_div(1, 0x53) == 0xCA
    assert gf_mul(0, 0x53) == 0 and gf_mul(0x53, 0) == 0


def _slow_mul(a: int, b: int) -> int:
    """Shift-and-add multiplication, reducing by x^8 + x^4 + x^3 + x + 1 (the definition, no tables)."""
    result = 0
    while b:
        if b & 1:
            result ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return result


def test_table_multiplication_matches_the_definition_everywhere() -> None:
    for a in range(256):
        for b in range(256):
            assert gf_mul(a, b) == _slow_mul(a, b)
        if a:
            assert gf_mul(a, gf_div(1, a)) == 1


def test_combine_known_answer_computed_by_hand() -> None:
    # f(x) = 0x42 + 0x05 x: f(1) = 0x47, f(2) = 0x42 ^ 0x0a = 0x48, f(3) = 0x42 ^ 0x0f = 0x4d
    assert combine([b"\x47\x01", b"\x48\x02"]) == b"\x42"
    assert combine([b"\x4d\x03", b"\x47\x01"]) == b"\x42"
    # g(x) = 0x01 + 0x02 x + 0x03 x^2 at 1, 2, 3: {01 ^ 02 ^ 03} = {00}, {01 ^ 04 ^ 0c} = {09},
    # {01 ^ 06 ^ 03*05} = {01 ^ 06 ^ 0f} = {08}
    assert _slow_mul(3, _slow_mul(3, 3)) == 0x0F
    assert combine([b"\x00\x01", b"\x09\x02", b"\x08\x03"]) == b"\x01"


@settings(max_examples=60, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=40),
    shares=st.integers(min_value=2, max_value=8),
    data=st.data(),
)
def test_any_threshold_shares_reconstruct(secret: bytes, shares: int, data: st.DataObject) -> None:
    threshold = data.draw(st.integers(min_value=2, max_value=shares))
    parts = split(secret, shares, threshold)
    assert len(parts) == shares and all(len(p) == len(secret) + 1 for p in parts)
    assert len({p[-1] for p in parts}) == shares  # distinct x coordinates
    for subset in itertools.combinations(parts, threshold):
        assert combine(list(subset)) == secret
    # more than the threshold works too
    assert combine(parts) == secret


def _interpolate_at(points: list[tuple[int, int]], x: int) -> int:
    value = 0
    for i, (x_i, y_i) in enumerate(points):
        basis = 1
        for j, (x_j, _) in enumerate(points):
            if i != j:
                basis = gf_mul(basis, gf_div(x ^ x_j, x_i ^ x_j))
        value ^= gf_mul(y_i, basis)
    return value


@settings(max_examples=40, deadline=None)
@given(
    secret=st.integers(0, 255),
    threshold=st.integers(min_value=2, max_value=6),
    candidate=st.integers(0, 255),
)
def test_fewer_than_threshold_shares_fit_every_secret(secret: int, threshold: int, candidate: int) -> None:
    """Any T-1 shares are consistent with every possible secret byte: they reveal nothing about it."""
    parts = split(bytes([secret]), threshold + 1, threshold)[: threshold - 1]
    points = [(p[-1], p[0]) for p in parts]
    # the unique polynomial of degree < T through the T-1 shares and (0, candidate) ...
    completed = [*points, (0, candidate)]
    # ... gives a T-th share; with it, the T-1 real shares combine to the candidate
    spare_x = next(x for x in range(1, 256) if x not in {p[0] for p in points})
    extra = bytes([_interpolate_at(completed, spare_x), spare_x])
    assert combine([*parts, extra]) == bytes([candidate])


def test_one_share_of_a_two_threshold_split_is_uniform_over_the_secret() -> None:
    # y = s + a*x: for every x, a -> y is a bijection, so y's distribution does not depend on s
    for x in (1, 2, 0x53, 255):
        for s in (0, 0x42, 255):
            assert sorted(s ^ gf_mul(a, x) for a in range(256)) == list(range(256))


def test_fewer_than_threshold_give_a_wrong_value_not_the_secret() -> None:
    secret = bytes(range(32))
    parts = split(secret, 5, 3)
    # two shares of a threshold-3 split combine to something (the caller checks it), almost never the secret
    assert combine(parts[:2]) != secret or combine(parts[1:3]) != secret


@pytest.mark.parametrize(("shares", "threshold"), [(1, 1), (3, 1), (2, 3), (256, 2), (0, 0)])
def test_bad_parameters_are_refused(shares: int, threshold: int) -> None:
    with pytest.raises(ShamirError):
        split(b"secret", shares, threshold)


def test_bad_shares_are_refused() -> None:
    parts = split(b"secret", 3, 2)
    with pytest.raises(ShamirError):
        combine(parts[:1])
    with pytest.raises(ShamirError):
        combine([parts[0], parts[0]])
    with pytest.raises(ShamirError):
        combine([parts[0], parts[1][:-2] + parts[1][-1:]])
    with pytest.raises(ShamirError):
        combine([parts[0], parts[1][:-1] + b"\x00"])
    with pytest.raises(ShamirError):
        split(b"", 3, 2)
