"""A dollar :class:`Budget` shared by concurrent teacher calls."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..errors import BudgetExceeded

__all__ = ["Budget", "Reservation"]


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
