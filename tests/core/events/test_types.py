"""The event type registry: registration rules, aliases, routing, migrations."""

from __future__ import annotations

import pytest

from thrum_core.errors import PluginError
from thrum_core.events.types import (
    DEFAULT_ROUTE,
    ApplyContext,
    EventType,
    EventTypeRegistry,
    StoredEvent,
    TombstoneRule,
)


def noop(ctx: ApplyContext, ev: StoredEvent) -> None:
    return None


def test_register_stamps_owner_and_resolves_aliases() -> None:
    reg = EventTypeRegistry()
    stamped = reg.bound("sessions")(EventType("agent.session.start", noop, aliases=("session.start",)))
    assert stamped.owner == "sessions"
    assert reg.get("session.start") is reg.get("agent.session.start") is stamped
    assert "session.start" in reg
    assert reg.names() == ["agent.session.start"]
    assert reg.all_names() == ["agent.session.start", "session.start"]


def test_duplicate_name_or_alias_names_both_plugins() -> None:
    reg = EventTypeRegistry()
    reg.bound("a")(EventType("x.one", noop, aliases=("x.legacy",)))
    with pytest.raises(PluginError, match=r"'x\.one' is registered twice: by plugin 'a' and by plugin 'b'"):
        reg.bound("b")(EventType("x.one", noop))
    with pytest.raises(PluginError, match=r"'x\.legacy'.*plugin 'a'.*plugin 'b'"):
        reg.bound("b")(EventType("x.two", noop, aliases=("x.legacy",)))
    with pytest.raises(PluginError, match="repeats a name"):
        reg.bound("b")(EventType("x.three", noop, aliases=("x.three",)))
    # nothing of the refused registrations leaked in
    assert reg.names() == ["x.one"]


def test_route_defaults_unknown_and_callable() -> None:
    reg = EventTypeRegistry()
    reg.bound("p")(EventType("p.fixed", noop, route="messages/fixed.jsonl"))
    reg.bound("p")(EventType("p.dyn", noop, route=lambda obj: f"messages/{obj['who']}.jsonl"))
    reg.bound("p")(EventType("p.plain", noop))
    assert reg.route({"type": "p.fixed"}) == "messages/fixed.jsonl"
    assert reg.route({"type": "p.dyn", "who": "bob"}) == "messages/bob.jsonl"
    assert reg.route({"type": "p.plain"}) == DEFAULT_ROUTE
    assert reg.route({"type": "nobody.knows"}) == "events.jsonl"
    assert reg.route({}) == "events.jsonl"
    with pytest.raises(ValueError, match="bad route"):
        reg.route({"type": "p.dyn", "who": "../escape"})


@pytest.mark.parametrize(
    "route", ["../x.jsonl", "a/b.jsonl", "messages/a/b.jsonl", ".hidden.jsonl", "x.txt", "messages.jsonl", ""]
)
def test_bad_static_routes_are_refused(route: str) -> None:
    with pytest.raises(PluginError):
        EventTypeRegistry().bound("p")(EventType("p.x", noop, route=route))


def test_migrations_registered_once_per_owner_and_kind() -> None:
    reg = EventTypeRegistry()
    reg.bound("a").migrations("a", ["CREATE TABLE p_a_x (x)"])
    reg.bound("a").migrations("a", ["CREATE TABLE p_a_local (x)"], local=True)
    with pytest.raises(PluginError, match="'a' are registered twice: by plugin 'a' and by plugin 'b'"):
        reg.bound("b").migrations("a", ["CREATE TABLE y (y)"])
    assert [m.owner for m in reg.migrations(local=False)] == ["a"]
    assert [m.steps for m in reg.migrations(local=True)] == [("CREATE TABLE p_a_local (x)",)]
    with pytest.raises(PluginError):
        reg.bound("a").migrations("bad'owner", [])


def test_rebuild_hooks_registered_once_per_owner() -> None:
    reg = EventTypeRegistry()

    def start(db: object) -> None:
        return None

    reg.bound("b").rebuild_hooks("b", finish=start)
    reg.bound("a").rebuild_hooks("a", start=start)
    assert [(h.owner, h.plugin, h.start, h.finish) for h in reg.rebuild_hooks()] == [
        ("a", "a", start, None),
        ("b", "b", None, start),
    ]
    with pytest.raises(PluginError, match="'a' are registered twice: by plugin 'a' and by plugin 'c'"):
        reg.bound("c").rebuild_hooks("a", start=start)
    with pytest.raises(PluginError, match="not callable"):
        reg.bound("c").rebuild_hooks("c", finish="DROP TABLE x")  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="invalid owner"):
        reg.bound("c").rebuild_hooks("", start=start)


def test_remove_plugin_forgets_everything_it_registered() -> None:
    reg = EventTypeRegistry()
    reg.bound("a")(EventType("a.x", noop, aliases=("a.old",), tombstone=TombstoneRule(lambda db: None)))
    reg.bound("a").migrations("a", ["CREATE TABLE t (x)"])
    reg.bound("a").rebuild_hooks("a", start=lambda db: None)
    reg.bound("b")(EventType("b.x", noop))
    reg.remove_plugin("a")
    assert reg.names() == ["b.x"]
    assert reg.get("a.old") is None
    assert reg.migrations(local=False) == []
    assert reg.rebuild_hooks() == []
    assert reg.tombstone_types() == []
    reg.bound("c")(EventType("a.x", noop))  # the name is free again


def test_bad_registrations_are_refused() -> None:
    reg = EventTypeRegistry()
    with pytest.raises(PluginError, match="not an EventType"):
        reg.bound("a")("a.x")  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="reducer is not callable"):
        reg.bound("a")(EventType("a.x", "nope"))  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="invalid name"):
        reg.bound("a")(EventType(" a.x", noop))
    with pytest.raises(PluginError, match="build_filter"):
        reg.bound("a")(EventType("a.x", noop, tombstone=object()))  # type: ignore[arg-type]
