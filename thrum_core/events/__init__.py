"""The event log and its SQLite projection: the kernel's data path (SPEC §6, §7).

- :mod:`~thrum_core.events.types`: event types, reducers, tombstone rules and
  the registry feature plugins fill through ``thrum_register_event_types``.
- :mod:`~thrum_core.events.log`: the JSONL files (durable batch appends,
  torn-tail repair, line reading, atomic rewrites).
- :mod:`~thrum_core.events.projection`: the SQLite projection (lifecycle,
  core tables, applying events, catch-up and rebuild in sort-key order).
- :mod:`~thrum_core.events.writer`: the single writer with group commit.
- :mod:`~thrum_core.events.store`: :class:`~thrum_core.events.store.EventStore`,
  which ties them together for the kernel.
"""
