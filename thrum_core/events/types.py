"""Event types, reducers and the registry feature plugins fill (SPEC §6, §7.3, §17).

The kernel knows nothing about messages, agents or groups.  A feature plugin
describes each of its event types with an :class:`EventType` — the type name,
a pure *reducer* that projects the event into the plugin's own SQLite tables,
where the event's line is appended (its *route*), an optional pydantic model
that validates locally written events, read-only *aliases*, and, for tombstone
types such as ``purge.executed``, a :class:`TombstoneRule`.  It registers them
from ``thrum_register_event_types`` together with the SQL migrations that
create its tables::

    @hookimpl
    def thrum_register_event_types(register):
        register.migrations("notes", ["CREATE TABLE p_notes_notes (note_id TEXT PRIMARY KEY, text TEXT)"])
        register(EventType("notes.create", reduce_create, route=route_by_author, model=NoteCreate))

**Reducers** (SPEC §7.3) are called as ``reducer(ctx, event)`` inside the
writer's transaction.  They must be deterministic functions of the projection
and the event, idempotent, and order-independent: the same set of events
applied in any order must leave the same rows, because rebuild applies the log
in sort-key order while the live path applies events as they arrive.  A reducer
whose parent entity is not known yet returns ``ctx.pending(key)``; the store
indexes the event ``pending`` and re-runs the reducer, in sort-key order, right
after another reducer calls ``ctx.provide(key)``.  A reducer that finds the
event malformed raises :class:`InvalidEvent` *before writing anything*; the
event is then indexed ``invalid``.  Any other exception (a bug, a bad SQL
statement) is logged and also indexes the event ``invalid`` — one plugin's
bug never stops the writer — except SQLite errors that mean the database or
the disk failed (I/O error, full, corrupt, ...), which fail the whole batch
(SPEC §6.5).

**Migrations** are ordered SQL scripts per owner.  *Projection* migrations
create tables derived from the log: a rebuild drops every object they create
and runs them again from the first step, and any change to an owner's steps
rebuilds the projection (the projection is a cache).  *Local* migrations
(``local=True``) create tables that are not derived from the log
(subscriptions, presence, tokens, ...); they survive rebuilds and are upgraded
in place, one new step at a time.  ``meta('schema:<owner>')`` and
``meta('local_schema:<owner>')`` record how many steps ran.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from thrum_core.errors import PluginError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from thrum_core.plugins.manager import PluginManager

__all__ = [
    "DEFAULT_ROUTE",
    "SOURCES",
    "STATES",
    "AppliedEvent",
    "ApplyContext",
    "EventType",
    "EventTypeRegistrar",
    "EventTypeRegistry",
    "InvalidEvent",
    "Migrations",
    "Pending",
    "RebuildHooks",
    "Reducer",
    "SortKey",
    "StoredEvent",
    "TombstonePredicate",
    "TombstoneRule",
]

#: Where events go when their type does not say (and events of unknown types).
DEFAULT_ROUTE = "events.jsonl"

#: How an event reached the store.
SOURCES = frozenset({"local", "sync", "peer", "catchup", "rebuild", "import"})

#: ``events.state`` values (SPEC §7.2).
STATES = ("applied", "pending", "ignored", "invalid", "tombstoned")

#: The SPEC §2.3 sort key: ``(instant_ns, event_id as UTF-8)``.
SortKey = tuple[int, bytes]

#: "Is this event tombstoned?" — called with the parsed line and its sort key.
TombstonePredicate = Callable[[Mapping[str, Any], SortKey], bool]


@dataclass(frozen=True, slots=True, init=False)
class StoredEvent:
    """One event as it is stored: the parsed object and its exact line.

    ``type`` is the registered type name (an alias such as ``session.start``
    is resolved to ``agent.session.start``; ``obj["type"]`` keeps what the line
    says).  ``k`` is the sort key as text, ``<20-digit ns>|<event_id>``.
    ``file`` is the log file relative to the sync dir.  ``seq`` is the local
    sequence (``events.seq``), ``None`` when nothing was stored.

    ``state`` is the ``events.state`` the event has after the write that
    returned it (``applied``, ``pending``, ``ignored``, ``invalid``,
    ``tombstoned``), or ``duplicate`` when the ``event_id`` was already stored
    (nothing was written; ``seq`` is ``None``).  Non-local events that a
    tombstone already covers are not written either: ``tombstoned`` with
    ``seq`` ``None``.
    """

    obj: dict[str, Any]
    line: bytes
    event_id: str
    type: str
    ts_ns: int
    k: str
    file: str
    origin_daemon: str
    source: str
    seq: int | None = None
    state: str = "applied"

    # The generated __init__ of a frozen dataclass calls object.__setattr__ per
    # field (3.5 µs here); setting the slots through their descriptors is
    # three times faster, which matters at a million events per rebuild.
    def __init__(
        self,
        obj: dict[str, Any],
        line: bytes,
        event_id: str,
        type: str,
        ts_ns: int,
        k: str,
        file: str,
        origin_daemon: str,
        source: str,
        seq: int | None = None,
        state: str = "applied",
    ) -> None:
        s = _STORED_SETTERS
        s[0](self, obj)
        s[1](self, line)
        s[2](self, event_id)
        s[3](self, type)
        s[4](self, ts_ns)
        s[5](self, k)
        s[6](self, file)
        s[7](self, origin_daemon)
        s[8](self, source)
        s[9](self, seq)
        s[10](self, state)

    @property
    def sort_key(self) -> SortKey:
        """The SPEC §2.3 sort key ``(ts_ns, event_id as UTF-8)``."""
        return (self.ts_ns, self.event_id.encode("utf-8", "surrogatepass"))


_STORED_SETTERS: tuple[Callable[[StoredEvent, Any], None], ...] = tuple(
    getattr(StoredEvent, f.name).__set__ for f in fields(StoredEvent)
)


class _StoredEventBuilder:
    """Builds a :class:`StoredEvent` twice as fast as its ``__init__`` (the store's hot loops).

    An instance of this class has exactly the slots of :class:`StoredEvent`,
    so plain attribute stores fill them (no frozen-dataclass detour), and then
    becomes a ``StoredEvent`` by ``__class__`` assignment, which Python allows
    between classes of the same layout.  Call it like ``StoredEvent`` with all
    eleven fields, in order; the result is an ordinary frozen ``StoredEvent``.
    """

    __slots__ = StoredEvent.__slots__

    def __init__(
        self,
        obj: dict[str, Any],
        line: bytes,
        event_id: str,
        type: str,
        ts_ns: int,
        k: str,
        file: str,
        origin_daemon: str,
        source: str,
        seq: int | None,
        state: str,
    ) -> None:
        self.obj = obj
        self.line = line
        self.event_id = event_id
        self.type = type
        self.ts_ns = ts_ns
        self.k = k
        self.file = file
        self.origin_daemon = origin_daemon
        self.source = source
        self.seq = seq
        self.state = state
        self.__class__ = StoredEvent  # type: ignore[assignment]


#: ``make_stored_event(obj, line, event_id, type, ts_ns, k, file, origin_daemon,
#: source, seq, state)`` → a :class:`StoredEvent`, faster than its constructor.
make_stored_event: Callable[..., StoredEvent] = _StoredEventBuilder  # type: ignore[assignment]

#: What ``thrum_event_applied`` observers receive.
AppliedEvent = StoredEvent


@dataclass(frozen=True, slots=True)
class Pending:
    """Returned by a reducer whose parent is unknown: wait for ``key``."""

    key: str


class InvalidEvent(Exception):
    """Raised by a reducer (before it writes anything) for a malformed event.

    The event is indexed ``invalid``, never projected, and reported by
    ``thrum doctor`` (SPEC §6.4).
    """


class ApplyContext:
    """What a reducer receives besides the event.

    - ``db``: the writer's SQLite connection, inside the batch transaction
      (rows come back as :class:`sqlite3.Row`).  Do not commit or roll back.
    - ``live``: ``True`` for events written or merged while the daemon serves,
      ``False`` during rebuild and start-up catch-up.  Reducers must produce
      the same rows either way; ``live`` is only for local side tables.
    - ``daemon_id``: this daemon's id (``origin_daemon`` of local events).
    - ``rebuilding``: ``True`` while a full rebuild applies the log to freshly
      created, empty projection tables.  A reducer may then leave out rows of
      derived tables that its owner's :class:`RebuildHooks` ``finish`` hook
      computes in bulk at the end (the result after ``finish`` must be what
      the live path gives).
    - ``memo``: a dict for facts about the schema a reducer would otherwise
      look up per event (does a table or trigger exist); emptied whenever an
      ingest starts and whenever the projection schema is reset.

    The store subclasses this; the methods below are the reducer's API.
    """

    db: sqlite3.Connection
    live: bool
    daemon_id: str
    rebuilding: bool = False
    memo: dict[str, Any]

    def pending(self, key: str) -> Pending:
        """Return the marker for "wait until something provides ``key``"."""
        return Pending(key)

    def provide(self, key: str) -> None:
        """Say that this event makes events waiting on ``key`` applicable.

        Events pending on ``key`` are re-applied, in sort-key order, right
        after the current reducer returns.
        """
        raise NotImplementedError

    def tombstones_changed(self) -> None:
        """Say that the state tombstone filters are built from has changed.

        Applying an event of a tombstone type does this automatically; call it
        from a reducer of another type when a :class:`TombstoneRule` depends on
        rows that reducer writes.
        """
        raise NotImplementedError

    def is_tombstoned(self, obj: Mapping[str, Any], key: SortKey) -> bool:
        """Whether the current tombstones cover the event ``obj`` with sort ``key``."""
        raise NotImplementedError


#: ``reducer(ctx, event)`` → ``None`` (applied) or ``ctx.pending(key)``.
Reducer = Callable[[ApplyContext, StoredEvent], "Pending | None"]


@dataclass(frozen=True)
class TombstoneRule:
    """How a tombstone event type (``purge.executed``, ``agent.cleanup``) removes other events.

    ``build_filter(db)`` receives a connection to the projection, in which
    every tombstone event of this type seen so far has been applied (its
    reducer ran), and returns a predicate ``(obj, sort_key) -> bool`` telling
    whether an event is tombstoned — or ``None`` when nothing is (the common
    case before any purge; it costs nothing per event).

    Contract:

    - The predicate is a snapshot: it must not touch ``db`` after
      ``build_filter`` returns (it may be used from another thread, after the
      connection moved on).  Load what it needs into sets/dicts up front.
    - It must be cheap (a few dict/set look-ups per call) and pure: the same
      answer for the same ``(obj, sort_key)`` and snapshot.
    - ``obj`` is the parsed line exactly as stored (aliases unresolved,
      defaults not filled); tolerate missing or odd fields (answer ``False``).
    - It is never asked about events of tombstone types (they are kept
      forever), and its answer for them is ignored.

    The store uses the predicate (1) when applying: a covered event is indexed
    ``tombstoned`` and its reducer is not called; (2) right after a tombstone
    event is applied, to rewrite the JSONL files without the covered lines
    (temp file + fsync + rename; a file left empty is removed) and mark their
    ``events`` rows ``tombstoned``; (3) through
    :meth:`EventStore.tombstone_filter` for merges and peer pulls.  The
    tombstone type's *reducer* still deletes the projection rows of events
    applied before the tombstone arrived.

    The store rebuilds the predicate after each tombstone event it applies and
    when a reducer calls :meth:`ApplyContext.tombstones_changed`.
    """

    build_filter: Callable[[sqlite3.Connection], TombstonePredicate | None]


RouteSpec = str | Callable[[Mapping[str, Any]], str]


@dataclass
class EventType:
    """One registered event type.

    - ``name``: the type written in the ``type`` field.
    - ``reducer``: projects the event (see the module docstring); ``None``
      means the event is indexed ``applied`` and has no other effect.
    - ``route``: the log file, relative to the sync dir, for locally written
      events: a path or ``route(obj) -> path``.  Paths are ``<name>.jsonl`` at
      the top of the sync dir or ``messages/<name>.jsonl`` (SPEC §6.3).
    - ``model``: a pydantic model validating locally written events (after
      the envelope is filled in); events from sync and peers are not
      validated — reducers must tolerate what they read.
    - ``aliases``: read-only names that mean this type (``session.start``).
    - ``tombstone``: set for tombstone types (SPEC §6.7).
    - ``owner``: the registering plugin; stamped by the registrar.
    """

    name: str
    reducer: Reducer | None = None
    route: RouteSpec = DEFAULT_ROUTE
    model: type[BaseModel] | None = None
    aliases: tuple[str, ...] = ()
    tombstone: TombstoneRule | None = None
    owner: str = ""


@dataclass(frozen=True)
class RebuildHooks:
    """Bulk work of one owner around a full rebuild (see :attr:`ApplyContext.rebuilding`).

    ``start(db)`` runs right after the projection tables were created (empty),
    before the first event; ``finish(db)`` after the last one.  Both run inside
    the rebuild's transaction on the writer's connection and must not commit.
    A typical pair drops the triggers that maintain derived tables and
    recomputes those tables (and recreates the triggers) with a few
    set-based statements, instead of paying for them event by event.
    """

    owner: str
    start: Callable[[sqlite3.Connection], None] | None
    finish: Callable[[sqlite3.Connection], None] | None
    plugin: str


@dataclass(frozen=True)
class Migrations:
    """Ordered SQL scripts of one owner (projection or local tables)."""

    owner: str
    steps: tuple[str, ...]
    local: bool
    plugin: str


@dataclass
class _TypeEntry:
    event_type: EventType
    plugin: str


class EventTypeRegistry:
    """Every registered event type and migration.

    Filled through :meth:`bound` registrars (one per plugin, see
    :class:`EventTypeRegistrar`).  Lookups resolve aliases.
    """

    def __init__(self) -> None:
        self._types: dict[str, _TypeEntry] = {}
        # every name and alias → the registered type
        self._by_name: dict[str, EventType] = {}
        self._name_owner: dict[str, str] = {}
        self._migrations: dict[tuple[str, bool], Migrations] = {}
        self._rebuild_hooks: dict[str, RebuildHooks] = {}
        self._checked_routes: set[str] = set()

    @classmethod
    def from_plugins(cls, pm: PluginManager) -> EventTypeRegistry:
        """The event types every loaded plugin of ``pm`` registers (``thrum_register_event_types``).

        A plugin whose registration fails is marked failed; the others still register.
        """
        registry = cls()
        pm.call_each("thrum_register_event_types", lambda plugin: {"register": registry.bound(plugin)})
        return registry

    # -- registration -------------------------------------------------------------
    def bound(self, plugin: str) -> EventTypeRegistrar:
        """A registrar that stamps ``plugin`` on everything it registers."""
        return EventTypeRegistrar(self, plugin)

    def add(self, event_type: EventType, plugin: str) -> EventType:
        """Register ``event_type`` for ``plugin``; refuse a name or alias already taken."""
        if not isinstance(event_type, EventType):
            raise PluginError(f"plugin {plugin!r} registered {event_type!r}, which is not an EventType")
        names = (event_type.name, *event_type.aliases)
        for name in names:
            if not isinstance(name, str) or not name or name != name.strip():
                raise PluginError(f"plugin {plugin!r} registered an event type with an invalid name {name!r}")
        if len(set(names)) != len(names):
            raise PluginError(
                f"event type {event_type.name!r} of plugin {plugin!r} repeats a name in its aliases"
            )
        for name in names:
            other = self._name_owner.get(name)
            if other is not None:
                raise PluginError(
                    f"event type {name!r} is registered twice: by plugin {other!r} and by plugin {plugin!r}"
                )
        if event_type.reducer is not None and not callable(event_type.reducer):
            raise PluginError(f"event type {event_type.name!r} of plugin {plugin!r}: reducer is not callable")
        if not (isinstance(event_type.route, str) or callable(event_type.route)):
            raise PluginError(
                f"event type {event_type.name!r} of plugin {plugin!r}: route must be a str or callable"
            )
        if isinstance(event_type.route, str):
            from thrum_core.events.log import check_route

            try:
                check_route(event_type.route)
            except ValueError as exc:
                raise PluginError(f"event type {event_type.name!r} of plugin {plugin!r}: {exc}") from None
        if event_type.tombstone is not None and not callable(
            getattr(event_type.tombstone, "build_filter", None)
        ):
            raise PluginError(
                f"event type {event_type.name!r} of plugin {plugin!r}: "
                "tombstone needs a build_filter callable"
            )
        stamped = replace(event_type, owner=plugin, aliases=tuple(event_type.aliases))
        self._types[stamped.name] = _TypeEntry(stamped, plugin)
        for name in names:
            self._by_name[name] = stamped
            self._name_owner[name] = plugin
        return stamped

    def add_migrations(
        self, owner: str, steps: list[str] | tuple[str, ...], plugin: str, *, local: bool
    ) -> None:
        """Register the ordered SQL ``steps`` of ``owner`` (projection or local tables)."""
        if not isinstance(owner, str) or not owner or any(c in owner for c in "'\"\n"):
            raise PluginError(f"plugin {plugin!r} registered migrations with an invalid owner {owner!r}")
        if isinstance(steps, str) or not all(isinstance(s, str) for s in steps):
            raise PluginError(f"migrations of {owner!r} (plugin {plugin!r}) must be a list of SQL strings")
        key = (owner, local)
        existing = self._migrations.get(key)
        if existing is not None:
            kind = "local migrations" if local else "migrations"
            raise PluginError(
                f"{kind} for {owner!r} are registered twice: "
                f"by plugin {existing.plugin!r} and by plugin {plugin!r}"
            )
        self._migrations[key] = Migrations(owner, tuple(steps), local, plugin)

    def add_rebuild_hooks(
        self,
        owner: str,
        plugin: str,
        *,
        start: Callable[[sqlite3.Connection], None] | None,
        finish: Callable[[sqlite3.Connection], None] | None,
    ) -> None:
        """Register ``owner``'s :class:`RebuildHooks`; refuse a second registration."""
        if not isinstance(owner, str) or not owner:
            raise PluginError(f"plugin {plugin!r} registered rebuild hooks with an invalid owner {owner!r}")
        for name, fn in (("start", start), ("finish", finish)):
            if fn is not None and not callable(fn):
                raise PluginError(f"rebuild hook {name} of {owner!r} (plugin {plugin!r}) is not callable")
        existing = self._rebuild_hooks.get(owner)
        if existing is not None:
            raise PluginError(
                f"rebuild hooks for {owner!r} are registered twice: "
                f"by plugin {existing.plugin!r} and by plugin {plugin!r}"
            )
        self._rebuild_hooks[owner] = RebuildHooks(owner, start, finish, plugin)

    def rebuild_hooks(self) -> list[RebuildHooks]:
        """Registered rebuild hooks, sorted by owner."""
        return [self._rebuild_hooks[o] for o in sorted(self._rebuild_hooks)]

    def remove_plugin(self, plugin: str) -> None:
        """Forget everything ``plugin`` registered (used when the plugin fails)."""
        for name in [n for n, e in self._types.items() if e.plugin == plugin]:
            del self._types[name]
        for name in [n for n, p in self._name_owner.items() if p == plugin]:
            del self._name_owner[name]
            self._by_name.pop(name, None)
        for key in [k for k, m in self._migrations.items() if m.plugin == plugin]:
            del self._migrations[key]
        for owner in [o for o, h in self._rebuild_hooks.items() if h.plugin == plugin]:
            del self._rebuild_hooks[owner]

    # -- lookups ------------------------------------------------------------------
    def get(self, type_name: str) -> EventType | None:
        """The registered type called ``type_name`` (an alias resolves to its type)."""
        return self._by_name.get(type_name)

    def names(self) -> list[str]:
        """Registered type names (without aliases), sorted."""
        return sorted(self._types)

    def all_names(self) -> list[str]:
        """Registered type names and aliases, sorted."""
        return sorted(self._by_name)

    def types(self) -> list[EventType]:
        """Registered types, sorted by name."""
        return [self._types[n].event_type for n in sorted(self._types)]

    def name_map(self) -> dict[str, EventType]:
        """A copy of the name-and-alias → type map (for hot loops)."""
        return dict(self._by_name)

    def tombstone_types(self) -> list[EventType]:
        """Registered tombstone types, sorted by name."""
        return [t for t in self.types() if t.tombstone is not None]

    def migrations(self, *, local: bool) -> list[Migrations]:
        """Projection (``local=False``) or local migrations, sorted by owner."""
        return [m for (owner, loc), m in sorted(self._migrations.items()) if loc == local]

    def route(self, obj: Mapping[str, Any]) -> str:
        """The log file (relative to the sync dir) for ``obj`` (SPEC §6.3).

        Unknown types go to ``events.jsonl``.  A route function's result is
        checked (:func:`thrum_core.events.log.check_route`); a bad result
        raises ``ValueError``.
        """
        typ = obj.get("type")
        et = self._by_name.get(typ) if isinstance(typ, str) else None
        if et is None:
            return DEFAULT_ROUTE
        route = et.route
        if isinstance(route, str):
            return route  # checked at registration
        path = route(obj)
        if path in self._checked_routes:
            return path
        from thrum_core.events.log import check_route

        check_route(path)
        if len(self._checked_routes) >= 65536:
            self._checked_routes.clear()
        self._checked_routes.add(path)
        return path

    def __contains__(self, type_name: object) -> bool:
        return isinstance(type_name, str) and type_name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._types)


@dataclass
class EventTypeRegistrar:
    """What ``thrum_register_event_types`` receives.

    ``register(EventType(...))`` adds a type; ``register.migrations(owner,
    [sql, ...], local=False)`` adds the owner's table migrations;
    ``register.rebuild_hooks(owner, start=..., finish=...)`` adds its bulk
    rebuild work.  All are stamped with the plugin; duplicates are refused
    naming both plugins.
    """

    registry: EventTypeRegistry
    plugin: str
    registered: list[str] = field(default_factory=list)

    def __call__(self, event_type: EventType) -> EventType:
        stamped = self.registry.add(event_type, self.plugin)
        self.registered.append(stamped.name)
        return stamped

    def migrations(self, owner: str, steps: list[str] | tuple[str, ...], *, local: bool = False) -> None:
        """Register ``owner``'s ordered SQL steps; ``local=True`` for tables kept across rebuilds."""
        self.registry.add_migrations(owner, steps, self.plugin, local=local)

    def rebuild_hooks(
        self,
        owner: str,
        *,
        start: Callable[[sqlite3.Connection], None] | None = None,
        finish: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """Register ``owner``'s bulk work around a full rebuild (:class:`RebuildHooks`)."""
        self.registry.add_rebuild_hooks(owner, self.plugin, start=start, finish=finish)
