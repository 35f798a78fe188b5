"""A per-process memo of authorisation decisions: the hot path's repeated calls evaluate once.

A decision is a pure function of what :func:`khoa.access.evaluate.evaluate` reads: the caller (its
whole :class:`~khoa.auth.principal.Principal`), the action, the resource and its account, the kind
of resource policy, the policies themselves (identity, boundary and session policies, the resource
policy, the SCPs) and every fact of the request context (global condition keys, the service's own,
principal tags). The memo's key holds all of them, or what they are made from, so an entry can only
answer a request whose every input is equal to the one that was evaluated:

- the global condition keys are made by ``khoa.access.authorize.facts_of`` from the caller and one
  tuple of the request's values (``request_facts``: its clock's second, Region, transport, address,
  network and calling service), and that tuple goes into the key. The clock's facts
  (``aws:CurrentTime``, ``aws:EpochTime``) have a resolution of one second, so a repeated call within
  the same second is answered from the memo and one in the next second is evaluated afresh - exactly
  as evaluation would decide; building the facts themselves only for an evaluation keeps a repeated
  call cheap;
- the service's own facts go into the key whole, values included;
- policies go in by identity (they are immutable once parsed, and the caches that hand them out
  replace, never edit, an entry: a changed policy is a different object). The caller's policies
  object also carries its tags (``aws:PrincipalTag/*``) and ARN (``aws:PrincipalArn`` of a role
  session). Each entry keeps a reference to the objects whose identities its key holds, so no
  identity can be reused by another object while the entry exists.

It is emptied with the node's other caches when access may have been taken away (the revocation
epoch), though a change already reaches it through the new policy objects; full, it is emptied.
"""

from __future__ import annotations

import contextlib
from typing import Any

from khoa.access.evaluate import Decision

MAX_DECISIONS = 10_000


class DecisionMemo:
    __slots__ = ("_entries", "max_size")

    def __init__(self, max_size: int = MAX_DECISIONS) -> None:
        self.max_size = max_size
        # key → (decision, the objects whose identities the key holds)
        self._entries: dict[tuple[Any, ...], tuple[Decision, tuple[object, ...]]] = {}

    @staticmethod
    def key(
        inputs: tuple[Any, ...], policies: tuple[object, ...], facts: dict[str, list[str]]
    ) -> tuple[Any, ...]:
        """The memo key of one evaluation: hashable ``inputs`` by value, ``policies`` by identity,
        ``facts`` by value in their order (an equal context in another order is merely a miss; a
        value given as text stays text, so ``"ab"`` and ``["a", "b"]`` are different keys)."""
        return (
            inputs,
            tuple(id(p) for p in policies),
            tuple((name, values if type(values) is str else tuple(values)) for name, values in facts.items()),
        )

    def get(self, key: tuple[Any, ...]) -> Decision | None:
        """The decision memoised under ``key``; None when there is none, or when a value of the key
        cannot be hashed (a service's context value that is not text: evaluated every time)."""
        try:
            entry = self._entries.get(key)
        except TypeError:
            return None
        return None if entry is None else entry[0]

    def put(self, key: tuple[Any, ...], decision: Decision, policies: tuple[object, ...]) -> None:
        if len(self._entries) >= self.max_size:
            self._entries.clear()
        with contextlib.suppress(TypeError):  # unhashable: never memoised (see get)
            self._entries[key] = (decision, policies)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
