"""A dollar :class:`Budget` shared by concurrent teacher calls, and :class:`SharedBudget`, the same
limit on what every process using one store spends (the store's ledger)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BudgetExceeded

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["Budget", "SharedBudget", "Reservation"]


@dataclass(frozen=True)
class Reservation:
    """Money set aside by :meth:`Budget.reserve` for one call in flight."""

    id: int
    amount: float


class Budget:
    """A dollar limit shared by concurrent calls (thread- and task-safe).

    Before a call, :meth:`reserve` sets its worst-case cost aside, or raises
    :class:`~downsize.errors.BudgetExceeded` if ``spent + reserved + estimate`` would pass
    the limit; after it, :meth:`commit` records what it really cost (0 if it failed unpaid).

    Examples
    --------
    >>> b = Budget(1.0)
    >>> r = b.reserve(0.4)
    >>> b.commit(r, 0.25)
    >>> round(b.spent_usd, 2), round(b.remaining_usd, 2)
    (0.25, 0.75)
    """

    def __init__(self, limit_usd: float, spent_usd: float = 0.0) -> None:
        if limit_usd < 0:
            raise ValueError(f"limit_usd must be >= 0, got {limit_usd}")
        self.limit_usd = float(limit_usd)
        self.spent_usd = float(spent_usd)
        self.reserved_usd = 0.0
        self._open: dict[int, float] = {}
        self._next = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"Budget(limit_usd={self.limit_usd}, spent_usd={self.spent_usd:.6f}, "
            f"reserved_usd={self.reserved_usd:.6f})"
        )

    @property
    def remaining_usd(self) -> float:
        return self.limit_usd - self.spent_usd - self.reserved_usd

    def reserve(self, estimate: float) -> Reservation:
        """Set ``estimate`` dollars aside, or raise BudgetExceeded without doing so."""
        with self._lock:
            if self.spent_usd + self.reserved_usd + estimate > self.limit_usd + 1e-12:
                raise BudgetExceeded(
                    f"the next teacher call could cost up to ${estimate:.6f}, but ${self.spent_usd:.6f} "
                    f"is spent and ${self.reserved_usd:.6f} reserved of the ${self.limit_usd:.6f} budget"
                )
            self._next += 1
            self._open[self._next] = estimate
            self.reserved_usd += estimate
            return Reservation(self._next, estimate)

    def commit(self, reservation: Reservation, actual: float) -> None:
        """Release ``reservation`` and count ``actual`` dollars as spent (once)."""
        with self._lock:
            amount = self._open.pop(reservation.id, None)
            if amount is None:
                raise ValueError(f"reservation {reservation.id} was already committed")
            self.reserved_usd = max(0.0, self.reserved_usd - amount)
            self.spent_usd += actual


class SharedBudget(Budget):
    """A :class:`Budget` on what *every* process using ``store`` spends from now on.

    ``downsize label --budget`` in two terminals at once: each run's limit counts what the other
    spends meanwhile. The in-process checks of :class:`Budget` still apply (they are implied by
    the shared one); the shared check is made by the store when the call is claimed
    (:meth:`~downsize.store.Store.claim_call`), atomically with the claim: everything recorded
    after the newest call at the time this budget was made, plus every live claim's worst-case
    reservation, plus this call's, must stay within ``limit_usd``.
    """

    def __init__(self, limit_usd: float, store: Store) -> None:
        super().__init__(limit_usd)
        self.store = store
        self.since_call_id = store.last_call_id()

    def ledger_cap(self, store: Store | None) -> tuple[float, int] | None:
        """``(limit_usd, since_call_id)`` for claims in ``store`` (None for another store)."""
        if store is None or store.url != self.store.url:
            return None
        return self.limit_usd, self.since_call_id
