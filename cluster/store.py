"""The PostgreSQL store: the lease, the journal rows and the snapshots (SQL lives here only).

Tables (created if missing; a libpq ``options=-csearch_path=...`` in the URL puts
several clusters of brokers in one database)::

    usher_lease     one row: epoch, holder, url (advertised), backend (the holder's
                    lease connection, pg_backend_pid), expires (the database's clock)
    usher_journal   pos (1, 2, ...), epoch (the writer's), op (a trace line),
                    decision (its decision line, or '')
    usher_snapshot  pos (records it covers), epoch, state (a pickle, as the
                    directory journal's snapshot files)

Design: the database decides who leads and orders every write. A takeover is one
UPDATE of the lease row that bumps the epoch, allowed when the lease has expired or
when the holder's lease connection is gone from ``pg_stat_activity`` (a killed
process: its sessions end at once). A small append is one INSERT ... SELECT that locks
the lease row ``FOR SHARE`` and inserts nothing unless the lease still holds the
writer's epoch; a group of many records is one transaction that locks the lease row
``FOR SHARE``, compares its epoch and COPYs the records in (the lock held to the
commit). Either way a takeover waits for an append in progress and every append after
it sees the new epoch, so a deposed leader can never append. The primary key on
``pos`` is a second fence. The append notifies ``usher_journal`` (sent on commit) so
standbys read the new rows at once.
"""

from __future__ import annotations

import contextlib
import os
import pickle

from usher.errors import UsherError

__all__ = ["NotLeader", "StoreError", "connect", "ensure_schema", "CHANNEL"]

CHANNEL = "usher_journal"

SCHEMA = """
CREATE TABLE IF NOT EXISTS usher_lease (
    id int PRIMARY KEY CHECK (id = 1),
    epoch bigint NOT NULL,
    holder text,
    url text,
    backend int,
    expires timestamptz NOT NULL
);
INSERT INTO usher_lease (id, epoch, expires) VALUES (1, 0, '-infinity') ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS usher_journal (
    pos bigint PRIMARY KEY,
    epoch bigint NOT NULL,
    op text NOT NULL,
    decision text NOT NULL
);
CREATE TABLE IF NOT EXISTS usher_snapshot (
    pos bigint PRIMARY KEY,
    epoch bigint NOT NULL,
    state bytea NOT NULL
);
"""

_TAKE = """
UPDATE usher_lease SET epoch = epoch + 1, holder = %(holder)s, url = %(url)s, backend = pg_backend_pid(),
       expires = clock_timestamp() + make_interval(secs => %(ttl)s)
WHERE id = 1 AND (expires < clock_timestamp() OR backend IS NULL
                  OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = usher_lease.backend))
RETURNING epoch
"""

_RENEW = """
UPDATE usher_lease SET expires = clock_timestamp() + make_interval(secs => %(ttl)s), backend = pg_backend_pid()
WHERE id = 1 AND epoch = %(epoch)s RETURNING epoch
"""

_APPEND = """
WITH ins AS (
    INSERT INTO usher_journal (pos, epoch, op, decision)
    SELECT r.pos, %(epoch)s, r.op, r.decision
    FROM unnest(%(pos)s::bigint[], %(op)s::text[], %(decision)s::text[]) AS r(pos, op, decision)
    WHERE (SELECT epoch FROM usher_lease WHERE id = 1 FOR SHARE) = %(epoch)s
    RETURNING pos)
SELECT count(*), pg_notify('usher_journal', coalesce(max(pos), 0)::text) FROM ins
"""

_SNAPSHOT = """
INSERT INTO usher_snapshot (pos, epoch, state)
SELECT %(pos)s, %(epoch)s, %(state)s
WHERE (SELECT epoch FROM usher_lease WHERE id = 1 FOR SHARE) = %(epoch)s
"""


class StoreError(UsherError):
    """The PostgreSQL store cannot be used (no connection, a damaged row)."""


class NotLeader(UsherError):
    """This broker does not hold the lease: writes go to the leader (``value``: its URL)."""


def connect(dsn, autocommit=True):
    """A psycopg connection to ``dsn`` (StoreError when it cannot be made), named
    ``usher <pid>`` in ``pg_stat_activity`` unless ``dsn`` names it."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        named = "application_name" in conninfo_to_dict(dsn)
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=5,
                               **({} if named else {"application_name": f"usher {os.getpid()}"}))
    except psycopg.Error as e:
        raise StoreError("store", _redact(dsn), f"cannot connect: {e}") from None


def _redact(dsn) -> str:
    """The store's address without a password."""
    import re

    return re.sub(r"(password=)\S+|(://[^:/@]+:)[^@]+@", lambda m: (m.group(1) or m.group(2)) + "***"
                  + ("" if m.group(1) else "@"), str(dsn))


def ensure_schema(conn) -> None:
    """Create the tables and the lease row if missing (idempotent, safe to race)."""
    import psycopg

    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(727001)")  # one creator at a time
        try:
            conn.execute(SCHEMA)
        except psycopg.errors.UniqueViolation:
            pass


# ------------------------------------------------------------------ lease
def take_lease(conn, holder, url, ttl) -> int | None:
    """Take the lease if it is free (expired, or its holder's session gone): the new epoch, or None."""
    row = conn.execute(_TAKE, {"holder": holder, "url": url, "ttl": ttl}).fetchone()
    return None if row is None else int(row[0])


def renew_lease(conn, epoch, ttl) -> bool:
    """Extend the lease of ``epoch``; False when another broker took it."""
    return conn.execute(_RENEW, {"epoch": epoch, "ttl": ttl}).fetchone() is not None


def release_lease(conn, epoch) -> None:
    """Give the lease of ``epoch`` up (a clean shutdown: a standby takes over at once)."""
    conn.execute("UPDATE usher_lease SET expires = '-infinity' WHERE id = 1 AND epoch = %s", (epoch,))


def lease(conn) -> dict:
    """The lease row: epoch, holder, url, expired (by the database's clock)."""
    row = conn.execute("SELECT epoch, holder, url, expires < clock_timestamp() FROM usher_lease WHERE id = 1").fetchone()
    if row is None:
        raise StoreError("usher_lease", None, "the lease row is missing")
    return {"epoch": int(row[0]), "holder": row[1], "url": row[2], "expired": bool(row[3])}


# ------------------------------------------------------------------ journal rows
COPY_FROM = 32  # groups of at least this many records go by COPY, smaller ones by one INSERT


def append(conn, epoch, first, records) -> None:
    """Append ``records`` (the journal's encoded records, ``<crc> TAB op TAB decision LF``)
    at positions first+1, first+2, ... under ``epoch``, in one transaction; NotLeader
    when the epoch no longer holds the lease (nothing is written)."""
    import psycopg

    n = len(records)
    try:
        count = _insert(conn, epoch, first, records) if n < COPY_FROM else _copy(conn, epoch, first, records)
    except psycopg.errors.UniqueViolation:
        count = 0
    if count != n:
        raise NotLeader("epoch", epoch, f"epoch {epoch} no longer holds the lease: {n} records not appended")


def _insert(conn, epoch, first, records) -> int:
    """One fenced INSERT ... SELECT (one round trip: the way of small groups)."""
    fields = [_fields(r) for r in records]
    params = {"epoch": epoch, "pos": list(range(first + 1, first + len(records) + 1)),
              "op": [op for op, _ in fields], "decision": [d for _, d in fields]}
    return conn.execute(_APPEND, params).fetchone()[0]


def _copy(conn, epoch, first, records) -> int:
    """A transaction that locks the lease row FOR SHARE and compares its epoch, COPYs
    the records in (text format, built from the records' bytes as they are), notifies
    and commits. The row lock is held to the commit: a takeover waits for it, and
    every append after the takeover reads the new epoch."""
    import psycopg

    data = b"".join([b"%d\t%d\t%s" % (first + k, epoch, r[9:]) for k, r in enumerate(records, 1)])
    data = data.replace(b"\\", b"\\\\")  # COPY's escape character; JSON has no raw tab or newline
    ok = False
    try:
        cursor = conn.execute("BEGIN; SELECT epoch FROM usher_lease WHERE id = 1 FOR SHARE")
        cursor.nextset()
        held = cursor.fetchone()
        if held is None or int(held[0]) != epoch:
            return 0
        with conn.cursor().copy("COPY usher_journal (pos, epoch, op, decision) FROM STDIN") as copy:
            copy.write(data)
        conn.execute(f"SELECT pg_notify('{CHANNEL}', '{first + len(records)}'); COMMIT")
        ok = True
        return len(records)
    finally:
        if not ok and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")


def _fields(record: bytes) -> tuple[str, str]:
    """(op, decision) text of an encoded record."""
    op, _, decision = record[9:-1].partition(b"\t")
    return op.decode(), decision.decode()


def rows_after(conn, pos, limit=None) -> list:
    """[(pos, epoch, op, decision)] of the rows after ``pos``, in order."""
    sql = "SELECT pos, epoch, op, decision FROM usher_journal WHERE pos > %s ORDER BY pos"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return conn.execute(sql, (pos,)).fetchall()


def last_position(conn) -> int:
    row = conn.execute("SELECT coalesce(max(pos), 0) FROM usher_journal").fetchone()
    return int(row[0])


# ------------------------------------------------------------------ snapshots
def write_snapshot(conn, epoch, pos, state, keep_rows_from=None) -> None:
    """Store the pickled ``state`` after ``pos`` records (fenced by ``epoch``); remove
    older snapshots and the rows up to ``keep_rows_from`` (standbys further behind
    reload from the snapshot)."""
    data = pickle.dumps(state, protocol=5)
    with conn.transaction():
        done = conn.execute(_SNAPSHOT, {"pos": pos, "epoch": epoch, "state": data}).rowcount
        if done != 1:
            raise NotLeader("epoch", epoch, f"epoch {epoch} no longer holds the lease: snapshot not written")
        conn.execute("DELETE FROM usher_snapshot WHERE pos < %s", (pos,))
        if keep_rows_from is not None:
            conn.execute("DELETE FROM usher_journal WHERE pos <= %s", (keep_rows_from,))


def latest_snapshot(conn):
    """(pos, state) of the latest snapshot, or None."""
    row = conn.execute("SELECT pos, state FROM usher_snapshot ORDER BY pos DESC LIMIT 1").fetchone()
    if row is None:
        return None
    try:
        return int(row[0]), pickle.loads(row[1])
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as e:
        raise StoreError("usher_snapshot", int(row[0]), f"cannot be read ({type(e).__name__}: {e})") from None


def has_state(conn) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM usher_snapshot) OR EXISTS (SELECT 1 FROM usher_journal)").fetchone()
    return bool(row[0])
