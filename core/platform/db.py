"""SQLAlchemy 2.0 plumbing for task code: one engine per DATABASE_URL, a session per task.

    with session_scope() as session:     # commits on success, rolls back on error, always closes
        session.add(row)

Tables are created on first use (``init_db``), or ahead of time with ``python -m scripts.init_db``.
The models live in their domain packages and share :class:`Base`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from core.config import get_settings

logger = logging.getLogger(__name__)

MODEL_MODULES = ("email_automation.models", "crm.models")


class Base(DeclarativeBase):
    """Declarative base of every Fikiri table."""


_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}
_initialised: set[str] = set()
# Upgrades of existing databases (columns added after a table was first created), registered by
# the model modules and run by init_db after create_all: create_all never alters a table.
_schema_upgrades: list[Callable[[Engine], None]] = []


def register_schema_upgrade(upgrade: Callable[[Engine], None]) -> Callable[[Engine], None]:
    """Run ``upgrade(engine)`` on every database this process opens (it must be idempotent)."""
    if upgrade not in _schema_upgrades:
        _schema_upgrades.append(upgrade)
    return upgrade


def add_column_if_missing(engine: Engine, table: str, column: str, sql_type: str) -> bool:
    """``ALTER TABLE table ADD COLUMN column sql_type`` unless it exists; True if this call added it.
    A concurrent process adding it first is fine (the column is then there)."""
    if column in {c["name"] for c in inspect(engine).get_columns(table)}:
        return False
    try:
        with engine.begin() as connection:
            connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))
    except DBAPIError:
        if column not in {c["name"] for c in inspect(engine).get_columns(table)}:
            raise
        return False
    logger.info("schema upgrade: added %s.%s", table, column)
    return True


def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": 30})
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
            _factories[url] = sessionmaker(engine, expire_on_commit=False)
        return engine


def init_db(url: str | None = None) -> None:
    """Create every table that does not exist yet (idempotent)."""
    import importlib

    url = url or get_settings().database_url
    for module in MODEL_MODULES:
        importlib.import_module(module)
    for attempt in range(3):
        try:
            Base.metadata.create_all(get_engine(url))
            break
        except DBAPIError as exc:  # another process created a table between our check and CREATE
            if attempt == 2:
                raise
            logger.info("create_all raced with another process (%s); checking again", str(exc).splitlines()[0])
    for upgrade in _schema_upgrades:
        upgrade(get_engine(url))
    _initialised.add(url)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session for one unit of work: commit on success, roll back on error, always close."""
    url = url or get_settings().database_url
    if url not in _initialised:
        init_db(url)
    session = _factories[url]()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Close every pooled connection (tests; processes that fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()
        _initialised.clear()


def delete_in_batches(table: Any, condition: Any, batch_size: int = 500, url: str | None = None) -> tuple[int, int]:
    """Delete the rows of ``table`` (a model or Table with an integer ``id``) matching ``condition``,
    ``batch_size`` rows per transaction, so no lock is held for longer than one small batch; works
    alike on SQLite and PostgreSQL. Returns (rows deleted, batches).

    Each batch picks the next ids in id order after the last batch (keyset paging on the primary
    key, so rows that stay never make a later batch read more), then deletes those ids that
    still match: a row changed in between is left alone."""
    from sqlalchemy import delete, select

    url = url or get_settings().database_url
    if url not in _initialised:
        init_db(url)
    table = getattr(table, "__table__", table)
    engine = get_engine(url)
    deleted = batches = 0
    after = None
    while True:
        with engine.begin() as connection:
            query = select(table.c.id).where(condition)
            if after is not None:
                query = query.where(table.c.id > after)
            ids = list(connection.scalars(query.order_by(table.c.id).limit(batch_size)))
            if not ids:
                break
            deleted += connection.execute(delete(table).where(table.c.id.in_(ids), condition)).rowcount or 0
        batches += 1
        after = ids[-1]
        if len(ids) < batch_size:
            break
    return deleted, batches
