"""The 8-state reachability lattice of SPEC section 5 and its join.

Static evidence (callgraph) and runtime evidence (probe hits, or a complete observation
window without hits) are each mapped to a state; the state stored per symbol is their join.

Hasse diagram (``a -> b`` means ``a < b``)::

    U -> SR, RO -> CR -> X
    U -> SU, RU -> CU -> X

The join table is spelled out below as a literal, so that a reviewer can check it cell by
cell against the SPEC without evaluating any rule.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import Final

import polars as pl

__all__ = [
    "JOIN_TABLE",
    "REACHABLE_STATES",
    "UNREACHABLE_STATES",
    "State",
    "join",
    "join_expr",
]


class State(StrEnum):
    """A point of the reachability lattice; the value is the stored short code."""

    U = "U"  # Unknown: no evidence (bottom)
    SR = "SR"  # StaticallyReachable: reachable from an entry point in the callgraph
    SU = "SU"  # StaticallyUnreachable: a callgraph node no entry point reaches
    RO = "RO"  # RuntimeObserved: at least one runtime hit
    RU = "RU"  # RuntimeUnobserved: no hit during a complete observation window
    CR = "CR"  # ConfirmedReachable: static and runtime agree on reachable
    CU = "CU"  # ConfirmedUnreachable: static and runtime agree on unreachable
    X = "X"  # Contested: a reachable and an unreachable claim (top)


U, SR, SU, RO, RU, CR, CU, X = (
    State.U,
    State.SR,
    State.SU,
    State.RO,
    State.RU,
    State.CR,
    State.CU,
    State.X,
)

#: States that claim the symbol can run.
REACHABLE_STATES: Final = frozenset({SR, RO, CR})
#: States that claim the symbol cannot run.
UNREACHABLE_STATES: Final = frozenset({SU, RU, CU})

_ORDER: Final = (U, SR, SU, RO, RU, CR, CU, X)

# Row = left operand, column = right operand, both in _ORDER. Symmetric by construction.
_TABLE_ROWS: Final[tuple[tuple[State, ...], ...]] = (
    #  U   SR  SU  RO  RU  CR  CU  X
    (U, SR, SU, RO, RU, CR, CU, X),  # U
    (SR, SR, X, CR, X, CR, X, X),  # SR
    (SU, X, SU, X, CU, X, CU, X),  # SU
    (RO, CR, X, RO, X, CR, X, X),  # RO
    (RU, X, CU, X, RU, X, CU, X),  # RU
    (CR, CR, X, CR, X, CR, X, X),  # CR
    (CU, X, CU, X, CU, X, CU, X),  # CU
    (X, X, X, X, X, X, X, X),  # X
)

#: The full join table, ``JOIN_TABLE[(a, b)] == a ⊔ b`` for all 64 ordered pairs.
JOIN_TABLE: Final = MappingProxyType(
    {
        (left, right): result
        for left, row in zip(_ORDER, _TABLE_ROWS, strict=True)
        for right, result in zip(_ORDER, row, strict=True)
    }
)

_PAIR_SEPARATOR: Final = "|"
_PAIR_TO_STATE: Final = {
    f"{left}{_PAIR_SEPARATOR}{right}": str(result) for (left, right), result in JOIN_TABLE.items()
}


def join(a: State, b: State) -> State:
    """Return the least upper bound of two lattice states.

    Args:
        a: Left state.
        b: Right state.

    Returns:
        ``a ⊔ b`` as listed in the SPEC section 5 join table.
    """
    return JOIN_TABLE[(State(a), State(b))]


def join_expr(static: pl.Expr, runtime: pl.Expr) -> pl.Expr:
    """Vectorised :func:`join` over two Utf8 columns of state codes.

    A null on either side means "no evidence" and is read as ``U``. A value that is not a
    state code makes the query fail instead of silently producing a wrong state.

    Args:
        static: Expression yielding state codes (typically ``U``, ``SR`` or ``SU``).
        runtime: Expression yielding state codes (typically ``U``, ``RO`` or ``RU``).

    Returns:
        A Utf8 expression with the joined state code per row.
    """
    pair = pl.concat_str(
        [static.fill_null(U.value), pl.lit(_PAIR_SEPARATOR), runtime.fill_null(U.value)]
    )
    return pair.replace_strict(_PAIR_TO_STATE, return_dtype=pl.String)
