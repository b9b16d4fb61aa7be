"""Paying once across processes: claims on paid calls, the spend ledger, and recording a call.

A call is claimed (:meth:`ClaimsMixin.claim_call`) before it is sent: a :class:`CallClaim` row
whose ``request_hash`` is unique. Another process asking for the same request finds it
``busy`` and waits for the recorded :class:`TeacherCall` (or skips the text for now);
:meth:`record_call` writes the call and drops the claim in one transaction; a call that failed
unpaid or was abandoned drops its claim (:meth:`release_claim`). A claim whose lease has run out,
or whose owner is a process of this host that has died (``kill -9``), is taken over: that request
may then be paid twice, which is why at most the calls that were in flight when a process died
(its teacher's ``max_concurrency``) can be repeated.

Everything is plain SQLAlchemy with a unique constraint and conditional UPDATEs, so it works on
PostgreSQL as on SQLite: every claim first updates the one :class:`SpendLedger` row, which
serialises the check "spent + reserved + this call ≤ budget" with the claim it allows (a claim
without a budget needs no lock: the unique constraint decides).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import BudgetExceeded, StoreError
from .schema import CallClaim, SpendLedger, TeacherCall, utcnow

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["ClaimsMixin", "new_owner", "owner_alive", "CLAIMED", "RECLAIMED", "RECORDED", "BUSY"]

log = logging.getLogger("downsize.store")

CLAIMED, RECLAIMED, RECORDED, BUSY = "claimed", "reclaimed", "recorded", "busy"


def new_owner() -> str:
    """A claim owner: ``host:pid:token`` (one per teacher client)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def owner_alive(owner: str) -> bool:
    """False only for an owner that is a process of this host that no longer exists.

    Another host's process cannot be checked from here: its claim lasts until its lease ends.
    """
    host, _, rest = owner.partition(":")
    pid_s = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_s.isdigit():
        return True
    pid = int(pid_s)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class ClaimsMixin:
    """The claim, ledger and record methods of :class:`~downsize.store.Store`."""

    def cached_call(self, request_hash: str) -> TeacherCall | None:
        with self.session() as s:  # type: ignore[attr-defined]
            return s.scalar(select(TeacherCall).where(TeacherCall.request_hash == request_hash))

    def _ensure_ledger(self) -> None:
        with self.session() as s:  # type: ignore[attr-defined]
            if s.get(SpendLedger, 1) is None:
                s.add(SpendLedger(id=1, claims=0, reclaimed=0))
        # two processes opening a new store at once: the loser's insert fails on the primary key
        # inside the session and is rolled back; the row exists either way

    def ensure_ledger(self) -> None:
        """Create the ledger row if this store has none (called when the store opens)."""
        try:
            self._ensure_ledger()
        except IntegrityError:
            pass

    def claim_call(
        self,
        request_hash: str,
        *,
        owner: str,
        lease_s: float,
        reserve_usd: float = 0.0,
        budget: tuple[float, int] | None = None,
        task: str | None = None,
    ) -> str:
        """Claim the right to send ``request_hash``; returns one of

        ``"claimed"``
            a new claim: send the call, then :meth:`record_call` or :meth:`release_claim`;
        ``"reclaimed"``
            an expired or orphaned claim taken over (the call may have been paid already);
        ``"recorded"``
            the call is recorded: answer it from the store;
        ``"busy"``
            another live claim holds it: wait for its record, or skip it for now.

        ``budget`` is ``(limit_usd, since_call_id)``: the claim is refused with
        :class:`~downsize.errors.BudgetExceeded` if what every process recorded after call
        ``since_call_id``, plus every live claim's reservation, plus ``reserve_usd`` would pass
        ``limit_usd``.
        """
        now = utcnow()
        lease = now + timedelta(seconds=lease_s)
        claims = CallClaim.__table__
        try:
            # SQLAlchemy Core on one connection (no ORM session): this runs before every paid call
            with self.engine.begin() as conn:  # type: ignore[attr-defined]
                if budget is not None:  # the lock: serialises the budget check with the claim it allows
                    conn.execute(update(SpendLedger).where(SpendLedger.id == 1)
                                 .values(claims=SpendLedger.claims + 1))
                recorded = select(TeacherCall.id).where(TeacherCall.request_hash == request_hash)
                if conn.execute(recorded).first():
                    return RECORDED
                cur = conn.execute(select(claims.c.id, claims.c.owner, claims.c.lease_until)
                                   .where(claims.c.request_hash == request_hash)).first()
                stale = cur is not None and (cur.lease_until <= now or not owner_alive(cur.owner))
                if cur is not None and not stale:
                    return BUSY
                if budget is not None:
                    _check_budget(conn, budget, reserve_usd, now, exclude=None if cur is None else cur.id)
                if cur is None:
                    conn.execute(insert(claims).values(request_hash=request_hash, state="pending", owner=owner,
                                                       lease_until=lease, reserved_usd=reserve_usd, task=task,
                                                       claimed_at=now))
                    # The reads above are not one snapshot (SQLite's driver and PostgreSQL's read
                    # committed see each statement's latest commits): another process may have
                    # recorded the call and dropped its claim between them. Holding our insert's
                    # write lock now, a record made before it is visible, and none can come after.
                    if conn.execute(recorded).first():
                        conn.execute(delete(claims).where(claims.c.request_hash == request_hash,
                                                          claims.c.owner == owner))
                        return RECORDED
                    return CLAIMED
                took = conn.execute(
                    update(claims)
                    .where(claims.c.id == cur.id, claims.c.owner == cur.owner)
                    .values(owner=owner, lease_until=lease, reserved_usd=reserve_usd, claimed_at=now, state="pending")
                ).rowcount
                if took != 1:
                    return BUSY
                conn.execute(update(SpendLedger).where(SpendLedger.id == 1)
                             .values(reclaimed=SpendLedger.reclaimed + 1))
                log.warning("teacher call %s…: took over the claim of %s (%s); it may be paid twice",
                            request_hash[:12], cur.owner,
                            "lease expired" if cur.lease_until <= now else "its process is gone")
                return RECLAIMED
        except IntegrityError:  # another process inserted the claim between our read and insert
            return BUSY

    def release_claim(self, request_hash: str, *, owner: str, abandoned: bool = False) -> None:
        """Drop ``owner``'s claim on ``request_hash`` (the call failed unpaid), or, ``abandoned``
        (cancelled in flight: the teacher may have billed it), end its lease now so that whoever
        sends it next takes it over and counts it as possibly paid twice."""
        mine = (CallClaim.request_hash == request_hash, CallClaim.owner == owner)
        with self.engine.begin() as conn:  # type: ignore[attr-defined]
            if abandoned:
                conn.execute(update(CallClaim).where(*mine).values(lease_until=utcnow(), state="abandoned"))
            else:
                conn.execute(delete(CallClaim).where(*mine))

    def release_owner(self, owner: str) -> int:
        """Mark every claim ``owner`` still holds abandoned (its client is closing); returns how many."""
        with self.session() as s:  # type: ignore[attr-defined]
            return int(s.execute(update(CallClaim).where(CallClaim.owner == owner)
                                 .values(lease_until=utcnow(), state="abandoned")).rowcount or 0)

    def record_call(self, call: TeacherCall, *, owner: str | None = None) -> TeacherCall:
        """Record a paid call and drop ``owner``'s claim on it, in one transaction.

        A request recorded meanwhile by another process (this one's lease ran out, or the call
        was made without a claim) was paid twice: the second payment is recorded too, as a row
        with ``repeat_of`` set and a derived hash, so the spend stays what the teacher billed;
        it is logged as a warning, never swallowed.
        """
        try:
            with self.session() as s:  # type: ignore[attr-defined]
                s.add(call)
                s.flush()
                if owner is not None:
                    s.execute(delete(CallClaim).where(CallClaim.request_hash == call.request_hash,
                                                      CallClaim.owner == owner))
            return call
        except IntegrityError:
            pass
        original = call.request_hash
        log.warning("teacher call %s… was paid again: it was recorded by another process meanwhile", original[:12])
        repeat = TeacherCall(**{c.key: getattr(call, c.key) for c in TeacherCall.__table__.columns if c.key != "id"})
        repeat.request_hash = hashlib.sha256(f"{original}:repeat:{uuid.uuid4().hex}".encode()).hexdigest()
        repeat.repeat_of = original
        try:
            with self.session() as s:  # type: ignore[attr-defined]
                s.add(repeat)
                if owner is not None:
                    s.execute(delete(CallClaim).where(CallClaim.request_hash == original, CallClaim.owner == owner))
        except IntegrityError as exc:  # pragma: no cover - only on a broken database
            raise StoreError(f"could not record teacher call {original}: {exc}") from exc
        return repeat

    def last_call_id(self) -> int:
        """The id of the newest recorded call (0 if none): where a run's budget starts counting."""
        with self.session() as s:  # type: ignore[attr-defined]
            return int(s.scalar(select(func.max(TeacherCall.id))) or 0)

    def spend_since(self, call_id: int) -> float:
        """Dollars recorded by every process after call ``call_id``."""
        with self.session() as s:  # type: ignore[attr-defined]
            return float(s.scalar(select(func.coalesce(func.sum(TeacherCall.cost_usd), 0.0))
                                  .where(TeacherCall.id > call_id)) or 0.0)

    def open_claims(self) -> list[CallClaim]:
        """The claims of calls being made now (or orphaned by a process that died)."""
        with self.session() as s:  # type: ignore[attr-defined]
            return list(s.scalars(select(CallClaim).order_by(CallClaim.id)))


def _check_budget(s: Connection, budget: tuple[float, int], reserve_usd: float, now: object,
                  exclude: int | None) -> None:
    limit, since = budget
    spent = float(s.scalar(select(func.coalesce(func.sum(TeacherCall.cost_usd), 0.0))
                           .where(TeacherCall.id > since)) or 0.0)
    q = select(func.coalesce(func.sum(CallClaim.reserved_usd), 0.0)).where(CallClaim.lease_until > now)
    if exclude is not None:
        q = q.where(CallClaim.id != exclude)
    reserved = float(s.scalar(q) or 0.0)
    if spent + reserved + reserve_usd > limit + 1e-12:
        raise BudgetExceeded(
            f"the next teacher call could cost up to ${reserve_usd:.6f}, but ${spent:.6f} is spent and "
            f"${reserved:.6f} reserved (by every process using this store, since this run began) "
            f"of the ${limit:.6f} budget"
        )
