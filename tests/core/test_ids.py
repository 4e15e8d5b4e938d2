"""Tests for thrum_core.ids (SPEC §2.5, §3, §6.8)."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import ulid as python_ulid
from hypothesis import given
from hypothesis import strategies as st

from thrum_core.canonical import canonical_json
from thrum_core.ids import (
    ULID_MAX_ENTROPY,
    ULID_MAX_MS,
    UlidGenerator,
    crock,
    event_id_of,
    go_receipt_event_id,
    new_daemon_id,
    new_event_id,
    new_group_id,
    new_id,
    new_message_id,
    new_pairing_code,
    new_peer_token,
    new_session_id,
    new_thread_id,
    new_ulid,
    new_user_token,
    origin_to_repo_input,
    repo_id_for,
    shard_name,
    token_sha256,
    ulid_str,
    unnamed_agent_id,
)

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_RE = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")

# --- SPEC §3.4 vectors --------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "n", "repo_id"),
    [
        ("git@github.com:leonletto/thrum.git", "https://github.com/leonletto/thrum", "r_TXA5KH3C2XQH"),
        ("https://github.com/leonletto/thrum.git", "https://github.com/leonletto/thrum", "r_TXA5KH3C2XQH"),
        ("ssh://git@github.com/leonletto/thrum.git", "https://github.com/leonletto/thrum", "r_TXA5KH3C2XQH"),
        ("http://User@Example.COM:8080/a/b.git", "https://example.com:8080/a/b", "r_1XACZGK40Y8K"),
        ("git@GitLab.example.com:Team/Proj.git", "https://GitLab.example.com/Team/Proj", "r_R6BNJG6AB09Y"),
        ("https://github.com/acme/widgets/", "https://github.com/acme/widgets/", "r_ZCGCPEBCN199"),
        ("/srv/git/widgets.git", "https:///srv/git/widgets", "r_BEXS01867AWB"),
    ],
)
def test_spec_repo_id_vectors(origin: str, n: str, repo_id: str) -> None:
    assert origin_to_repo_input(origin) == n
    assert repo_id_for(origin, "/nonexistent/ignored") == repo_id


def test_spec_repo_id_without_origin() -> None:
    assert repo_id_for(None, "/home/dev/widgets") == "r_3WYW4VN7RP6E"
    assert repo_id_for("", "/home/dev/widgets") == "r_3WYW4VN7RP6E"
    assert repo_id_for("   \n", "/home/dev/widgets/") == "r_3WYW4VN7RP6E"


def test_spec_unnamed_agent_vectors() -> None:
    assert unnamed_agent_id("r_TXA5KH3C2XQH", "coordinator", "main") == "coordinator_1qj0mxzsz6"
    assert unnamed_agent_id("r_TXA5KH3C2XQH", "implementer", "auth") == "implementer_mwnb27hdn5"


def test_spec_crock_vector() -> None:
    assert crock(hashlib.sha256(b"").digest()) == "WERC8GMRZGE196QVYK49JVXS4GKTWGF4CJDS6K54JPCHPY2JQ1AG"


def test_spec_ulid_vectors() -> None:
    assert ulid_str(1767225600000, 0) == "01KDVDNA000000000000000000"
    assert ulid_str(1767225630000, 0x0123456789ABCDEF0123) == "01KDVDP79G04HMASW9NF6YY093"


@pytest.mark.parametrize(
    ("typ", "ts", "field", "entity", "expected"),
    [
        (
            "message.create",
            "2026-01-01T00:00:30Z",
            "message_id",
            "msg_00000001",
            "evt_01KDVDP79G6MTK4CSQ64T36EB2",
        ),
        (
            "agent.register",
            "2026-01-01T00:00:00Z",
            "agent_id",
            "coordinator_0000",
            "evt_01KDVDNA0070SKEC1J6XHKCD9H",
        ),
        (
            "agent.session.start",
            "2026-01-01T17:00:00Z",
            "session_id",
            "ses_000000",
            "evt_01KDX80ZM06DH6CEB5C9GP8SHK",
        ),
    ],
)
def test_spec_computed_event_id_vectors(typ: str, ts: str, field: str, entity: str, expected: str) -> None:
    assert event_id_of({"type": typ, "timestamp": ts, field: entity, "other": [1, 2]}) == expected


def test_spec_shard_vectors() -> None:
    assert shard_name("user:leon") == "user_leon"
    assert shard_name("agent:implementer:1B9K33T6RK") == "implementer_1B9K33T6RK"


# --- crock and ULIDs ----------------------------------------------------------


@given(st.binary(max_size=64))
def test_crock_is_rfc4648_bit_order_in_crockford_alphabet(b: bytes) -> None:
    bits = "".join(f"{byte:08b}" for byte in b)
    bits += "0" * (-len(bits) % 5)
    expected = "".join(CROCKFORD[int(bits[i : i + 5], 2)] for i in range(0, len(bits), 5))
    assert crock(b) == expected


def test_crock_32_bytes_is_52_chars() -> None:
    assert len(crock(bytes(range(32)))) == 52


@given(st.integers(0, ULID_MAX_MS), st.integers(0, ULID_MAX_ENTROPY))
def test_ulid_str_matches_python_ulid(ms: int, entropy: int) -> None:
    text = ulid_str(ms, entropy)
    assert ULID_RE.fullmatch(text)
    ref = python_ulid.ULID.from_bytes(((ms << 80) | entropy).to_bytes(16, "big"))
    assert text == str(ref)
    assert python_ulid.ULID.from_str(text).milliseconds == ms


@given(
    st.tuples(st.integers(0, ULID_MAX_MS), st.integers(0, ULID_MAX_ENTROPY)),
    st.tuples(st.integers(0, ULID_MAX_MS), st.integers(0, ULID_MAX_ENTROPY)),
)
def test_ulid_text_order_is_numeric_order(a: tuple[int, int], b: tuple[int, int]) -> None:
    assert (ulid_str(*a) < ulid_str(*b)) == (a < b)


@pytest.mark.parametrize(
    ("ms", "entropy"), [(-1, 0), (ULID_MAX_MS + 1, 0), (0, -1), (0, ULID_MAX_ENTROPY + 1)]
)
def test_ulid_str_range(ms: int, entropy: int) -> None:
    with pytest.raises(ValueError):
        ulid_str(ms, entropy)


def test_generator_same_ms_increments_entropy() -> None:
    draws = iter([100, 900])
    gen = UlidGenerator(time_ns=lambda: 1767225600000 * 1_000_000 + 5, random_bits=lambda: next(draws))
    assert gen.next_parts() == (1767225600000, 100)
    assert gen.next_parts() == (1767225600000, 101)
    assert gen.next_parts() == (1767225600000, 102)


def test_generator_new_ms_draws_fresh_entropy() -> None:
    times = iter([10_000_000, 10_999_999, 11_000_000])
    draws = iter([500, 7])
    gen = UlidGenerator(time_ns=lambda: next(times), random_bits=lambda: next(draws))
    assert gen.next_parts() == (10, 500)
    assert gen.next_parts() == (10, 501)
    assert gen.next_parts() == (11, 7)


def test_generator_keeps_increasing_when_the_clock_steps_back() -> None:
    times = iter([50_000_000, 40_000_000, 51_000_000])
    draws = iter([3, 1])
    gen = UlidGenerator(time_ns=lambda: next(times), random_bits=lambda: next(draws))
    first = gen.new()
    second = gen.new()
    third = gen.new()
    assert first < second < third
    assert ulid_str(50, 4) == second


def test_generator_overflow_waits_for_next_ms() -> None:
    clock_calls: list[int] = []
    readings = iter([7_000_000, 7_000_000, 7_100_000, 7_900_000, 8_000_000])

    def clock() -> int:
        value = next(readings)
        clock_calls.append(value)
        return value

    draws = iter([ULID_MAX_ENTROPY - 1, 42])
    gen = UlidGenerator(time_ns=clock, random_bits=lambda: next(draws))
    assert gen.next_parts() == (7, ULID_MAX_ENTROPY - 1)
    assert gen.next_parts() == (7, ULID_MAX_ENTROPY)
    # Entropy would overflow: the generator polls the clock until ms 8.
    assert gen.next_parts() == (8, 42)
    assert clock_calls == [7_000_000, 7_000_000, 7_100_000, 7_900_000, 8_000_000]


def test_generator_strictly_increasing_under_threads() -> None:
    gen = UlidGenerator()
    per_thread: list[list[str]] = [[] for _ in range(8)]

    def worker(out: list[str]) -> None:
        for _ in range(3000):
            out.append(gen.new())

    threads = [threading.Thread(target=worker, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [u for out in per_thread for u in out]
    assert len(set(every)) == len(every) == 24_000
    for out in per_thread:
        assert all(a < b for a, b in itertools.pairwise(out))


def test_generator_draws_fresh_entropy_in_a_new_ms() -> None:
    gen = UlidGenerator()
    values = {gen.next_parts() for _ in range(200)}
    by_ms: dict[int, list[int]] = {}
    for ms, entropy in sorted(values):
        by_ms.setdefault(ms, []).append(entropy)
    # Within one ms the entropies are consecutive.
    for entropies in by_ms.values():
        assert entropies == list(range(entropies[0], entropies[0] + len(entropies)))


def test_module_level_ids_have_prefixes_and_increase() -> None:
    made = [
        new_event_id(),
        new_message_id(),
        new_session_id(),
        new_thread_id(),
        new_group_id(),
        new_daemon_id(),
        new_id("x"),
    ]
    prefixes = ["evt_", "msg_", "ses_", "thr_", "grp_", "d_", "x_"]
    for value, prefix in zip(made, prefixes, strict=True):
        assert value.startswith(prefix)
        assert ULID_RE.fullmatch(value[len(prefix) :])
    ulids = [v.split("_", 1)[1] for v in made] + [new_ulid()]
    assert ulids == sorted(ulids) and len(set(ulids)) == len(ulids)


# --- repo_id details ----------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "n"),
    [
        ("https://github.com/a/b.git.git", "https://github.com/a/b.git"),  # one .git only
        ("https://GitHub.COM/Acme/Repo", "https://github.com/Acme/Repo"),  # path case kept
        ("https://github.com/a/b.git?x=1#frag", "https://github.com/a/b"),
        ("https://github.com/a/b?", "https://github.com/a/b"),
        ("https://github.com/a%20b/c%2Fd.git", "https://github.com/a b/c/d"),
        ("https://u:p%40ss@host.example/x", "https://host.example/x"),
        ("https://a@b@host/x", "https://host/x"),  # last @ separates userinfo
        ("file:///srv/x.git", "https:///srv/x"),
        ("//host.example/x.git", "https://host.example/x"),
        ("///srv/x", "https://///srv/x"),  # no scheme: "///" is path, not authority
        ("relative/path.git", "https://relative/path"),
        ("  https://github.com/a/b.git \n", "https://github.com/a/b"),
        ("git@host:/abs/p.git", "https://host//abs/p"),
        ("git@Host:a:b.git", "https://Host/a:b"),
        ("https://[fe80::1]:8080/x", "https://[fe80::1]:8080/x"),
        ("https://[fe80::1%25en0]/x", "https://[fe80::1%en0]/x"),
        ("https://h%C3%A9llo.example/x", "https://héllo.example/x"),
        ("https://HÉ.example/x", "https://hé.example/x"),
        ("host.example:x/y", "https://"),  # Go parses "host.example" as an opaque scheme
        ("*", "https://*"),
    ],
)
def test_origin_go_url_rules(origin: str, n: str) -> None:
    assert origin_to_repo_input(origin) == n


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "",
        " \t\n",
        "user@host:path",  # SPEC: scp form not starting with git@
        "git@host-without-colon/x",
        ":foo",  # missing protocol scheme
        "https://host:80a/x",  # bad port
        "https://ho st/x",  # invalid host char
        "https://host%41/x",  # host escape of an ASCII byte
        "https://host/a%zzb",  # bad path escape
        "https://host/a%4",
        "https://host/x#%zz",  # bad fragment escape
        "https://us er@host/x",  # invalid userinfo
        "https://usér@host/x",  # non-ASCII userinfo (Go validUserinfo)
        "https://[fe80::1/x",  # missing ]
        "https://[fe80::1]x/y",
        "https://host/a\x01b",  # control byte
        "https://host/a\x7fb",
    ],
)
def test_origin_not_usable(origin: str | None) -> None:
    assert origin_to_repo_input(origin) is None


def test_repo_id_file_fallback_resolves_symlinks(tmp_path: Path) -> None:
    real = tmp_path / "real" / "widgets"
    real.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real")
    expected_n = "file://" + os.path.realpath(real)
    expected = "r_" + crock(hashlib.sha256(expected_n.encode()).digest())[:12]
    assert repo_id_for(None, str(real)) == expected
    assert repo_id_for(None, str(link / "widgets")) == expected
    assert repo_id_for("user@host:path", str(link / "widgets") + "/") == expected


def test_repo_id_relative_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "w").mkdir()
    monkeypatch.chdir(tmp_path)
    assert repo_id_for(None, "w") == repo_id_for(None, str(tmp_path / "w"))


def test_repo_id_hashes_raw_bytes_of_undecodable_paths(tmp_path: Path) -> None:
    root = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9")
    n = os.fsencode(os.path.realpath(root))
    expected = "r_" + crock(hashlib.sha256(b"file://" + n).digest())[:12]
    assert repo_id_for(None, root) == expected


# --- computed event ids -------------------------------------------------------


def _go_formula(typ: str, ts: str, entity: str, ms: int) -> str:
    h = hashlib.sha256(f"{typ}:{ts}:{entity}".encode()).hexdigest()
    return "evt_" + ulid_str(ms, int.from_bytes(h[:10].encode(), "big"))


def _content_id(obj: dict[str, object]) -> str:
    return "evt_h" + hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:32]


def test_event_id_present_is_returned_verbatim() -> None:
    assert event_id_of({"event_id": "anything at all", "type": "message.create"}) == "anything at all"


def test_event_id_entity_per_type() -> None:
    ts = "2026-01-01T00:00:30.123456Z"
    ms = 1767225630123
    base = {"timestamp": ts, "message_id": "M", "agent_id": "A", "session_id": "S"}
    assert event_id_of({**base, "type": "message.edit"}) == _go_formula("message.edit", ts, "M", ms)
    assert event_id_of({**base, "type": "message.receipt"}) == _go_formula("message.receipt", ts, "M", ms)
    assert event_id_of({**base, "type": "agent.update"}) == _go_formula("agent.update", ts, "A", ms)
    assert event_id_of({**base, "type": "agent.cleanup"}) == _go_formula("agent.cleanup", ts, "S", ms)
    assert event_id_of({**base, "type": "agent.session.end"}) == _go_formula("agent.session.end", ts, "S", ms)
    assert event_id_of({**base, "type": "session.start"}) == _go_formula("session.start", ts, "S", ms)
    assert event_id_of({**base, "type": "session.end"}) == _go_formula("session.end", ts, "S", ms)


def test_event_id_missing_or_null_entity_is_empty_string() -> None:
    obj = {"type": "agent.session.start", "timestamp": "2026-01-01T17:00:00Z", "agent_id": "a"}
    expected = _go_formula("agent.session.start", "2026-01-01T17:00:00Z", "", 1767286800000)
    assert event_id_of(obj) == expected
    assert event_id_of({**obj, "session_id": None}) == expected


def test_event_id_uses_timestamp_text_as_written() -> None:
    a = {"type": "message.create", "timestamp": "2026-01-01T00:00:30Z", "message_id": "m"}
    b = {"type": "message.create", "timestamp": "2026-01-01T01:00:30+01:00", "message_id": "m"}
    assert event_id_of(a) != event_id_of(b)
    assert event_id_of(a)[4:14] == event_id_of(b)[4:14]  # same ULID time part


def test_event_id_empty_or_non_string_id_is_computed() -> None:
    obj = {"type": "message.create", "timestamp": "2026-01-01T00:00:30Z", "message_id": "msg_00000001"}
    assert event_id_of({**obj, "event_id": ""}) == "evt_01KDVDP79G6MTK4CSQ64T36EB2"
    assert event_id_of({**obj, "event_id": None}) == "evt_01KDVDP79G6MTK4CSQ64T36EB2"


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "group.create", "timestamp": "2026-01-01T00:00:30Z", "group_id": "g", "name": "n"},
        {"type": "purge.executed", "timestamp": "2026-01-01T00:00:30Z", "cutoff": "2025-01-01T00:00:00Z"},
        {"type": "message.create", "timestamp": "not a time", "message_id": "m"},
        {"type": "message.create", "message_id": "m"},
        {"type": "message.create", "timestamp": 1767225630, "message_id": "m"},
        {"type": "message.create", "timestamp": "2026-01-01T00:00:30Z", "message_id": 17},
        {"type": 5, "timestamp": "2026-01-01T00:00:30Z"},
        {"timestamp": "2026-01-01T00:00:30Z", "é": "\u2028"},
        {},
    ],
)
def test_event_id_content_hash_otherwise(obj: dict[str, object]) -> None:
    eid = event_id_of(obj)
    assert eid == _content_id(obj)
    assert re.fullmatch(r"evt_h[0-9a-f]{32}", eid)


def test_event_id_content_hash_ignores_key_order_and_spacing() -> None:
    a = {"type": "group.delete", "timestamp": "x", "group_id": "g", "deleted_by": "me"}
    b = dict(reversed(list(a.items())))
    assert event_id_of(a) == event_id_of(b)


def test_event_id_content_hash_tolerates_lone_surrogates() -> None:
    obj = {"type": "x", "s": "\ud800"}
    assert event_id_of(obj) == event_id_of(dict(obj))
    assert event_id_of(obj).startswith("evt_h")


def test_go_receipt_event_id_formula() -> None:
    h = hashlib.sha256(b"message.receipt:msg_1:furiosa").hexdigest()
    expected = "evt_" + ulid_str(1767225630000, int.from_bytes(h[:10].encode(), "big"))
    assert go_receipt_event_id("msg_1", "furiosa", 1767225630000) == expected
    assert go_receipt_event_id("msg_1", "furiosa", 1767225630000) == expected  # deterministic
    assert go_receipt_event_id("msg_1", "maximus", 1767225630000) != expected


# --- shards -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "shard"),
    [
        ("furiosa", "furiosa"),
        ("coordinator_1qj0mxzsz6", "coordinator_1qj0mxzsz6"),
        ("system", "system"),
        ("implementer-x_1qj0mxzsz6", "implementer-x_1qj0mxzsz6"),
        ("Furiosa", "Furiosa"),
        ("a.b/c\\d e", "a_b_c_d_e"),
        ("../../etc", "______etc"),
        ("..", "__"),
        ("é", "_"),
        ("agent:", "_unresolved"),
        ("", "_unresolved"),
        ("agent:agent:x", "agent_x"),
        ("x" * 150 + ":", "x" * 100),
    ],
)
def test_shard_name(actor: str, shard: str) -> None:
    assert shard_name(actor) == shard


@given(st.text())
def test_shard_name_is_always_a_safe_file_name(actor: str) -> None:
    name = shard_name(actor)
    assert name
    assert re.fullmatch(r"[A-Za-z0-9_-]+", name)


# --- tokens -------------------------------------------------------------------


def test_user_and_peer_tokens() -> None:
    user = new_user_token()
    peer = new_peer_token()
    assert re.fullmatch(r"tok_[0-9a-f]{64}", user)
    assert re.fullmatch(r"[0-9a-f]{64}", peer)
    assert new_user_token() != user and new_peer_token() != peer


def test_pairing_code() -> None:
    codes = [new_pairing_code(16) for _ in range(50)]
    assert all(re.fullmatch(r"[0-9]{16}", c) for c in codes)
    assert len(set(codes)) == 50
    assert re.fullmatch(r"[0-9]{8}", new_pairing_code(8))
    # Zero padding: with one digit every value 0-9 shows up.
    assert {new_pairing_code(1) for _ in range(400)} == set("0123456789")
    with pytest.raises(ValueError):
        new_pairing_code(0)


def test_token_sha256() -> None:
    assert token_sha256("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert token_sha256("tok_é") == hashlib.sha256("tok_é".encode()).hexdigest()


# --- import cost --------------------------------------------------------------


def test_ids_imports_only_the_standard_library() -> None:
    code = (
        "import sys; import thrum_core.ids, thrum_core.timefmt, thrum_core.canonical, thrum_core.names;"
        "bad = [m for m in ('pydantic', 'trio', 'pluggy', 'pygit2', 'ulid', 'importlib.metadata',"
        " 'hashlib', 'secrets', 'datetime') if m in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
