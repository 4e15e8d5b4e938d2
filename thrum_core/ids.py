"""Identifiers: ULIDs, prefixed ids, repo and agent ids, computed event ids (SPEC §2.5, §3).

**ULID encoding: standard library, not python-ulid.**  The SPEC fixes the
generation rule exactly (same millisecond → previous entropy + 1, overflow waits
for the next millisecond, otherwise 80 fresh CSPRNG bits) and needs ULIDs built
from a *given* time and entropy for the Go-compatible computed ids (§3.2, §6.8).
Both are a few lines over ``int``/``base64`` and ``os.urandom``; doing them here
avoids importing a third-party package on the CLI's start-up path and keeps the
monotonic rule visibly ours.  The tests cross-check the encoding against
python-ulid.

**Monotonic across clock steps.**  If the wall clock steps back, the generator
keeps using the previous ULID's millisecond (entropy + 1) rather than drawing
fresh entropy for an earlier time, so ids from one process never decrease.

Module-level imports are standard library only (the CLI imports this module);
``hashlib`` and ``secrets`` are imported on first use.
"""

from __future__ import annotations

import _thread
import base64
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from thrum_core import timefmt
from thrum_core.canonical import canonical_bytes

__all__ = [
    "ULID_MAX_ENTROPY",
    "ULID_MAX_MS",
    "UlidGenerator",
    "crock",
    "event_id_of",
    "go_receipt_event_id",
    "new_daemon_id",
    "new_event_id",
    "new_group_id",
    "new_id",
    "new_message_id",
    "new_pairing_code",
    "new_peer_token",
    "new_session_id",
    "new_thread_id",
    "new_ulid",
    "new_user_token",
    "origin_to_repo_input",
    "repo_id_for",
    "shard_name",
    "token_sha256",
    "ulid_str",
    "unnamed_agent_id",
]

ULID_MAX_MS = (1 << 48) - 1
ULID_MAX_ENTROPY = (1 << 80) - 1

_CROCK_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCK = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCK_ALPHABET)


def _sha256(data: bytes) -> Any:
    # CPython's built-in SHA-256 first: hashlib loads OpenSSL (2-10 ms), which a
    # CLI command computing one unnamed agent id cannot afford.  Same digest.
    try:
        if sys.version_info >= (3, 12):
            from _sha2 import sha256
        else:
            from _sha256 import sha256
    except ImportError:  # a build without the built-in hashes
        from hashlib import sha256
    return sha256(data)


# ---------------------------------------------------------------------------
# Crockford base32 and ULIDs


def crock(b: bytes) -> str:
    """Crockford base32 of ``b`` (SPEC §2.5): RFC 4648 bit order, uppercase, no padding."""
    return base64.b32encode(b).decode("ascii").rstrip("=").translate(_CROCK)


def ulid_str(ms: int, entropy: int) -> str:
    """Return the 26-char ULID for a 48-bit millisecond time and 80-bit entropy.

    Raises ``ValueError`` when either is out of range.
    """
    if not 0 <= ms <= ULID_MAX_MS:
        raise ValueError(f"ULID time {ms} ms is out of range")
    if not 0 <= entropy <= ULID_MAX_ENTROPY:
        raise ValueError(f"ULID entropy {entropy} is out of range")
    # A ULID is the 128-bit value read as 130 bits (two leading zero bits) in
    # groups of 5: the first 10 chars are the 48-bit time (as 50 bits), the
    # last 16 the 80-bit entropy.  Both are encoded 10 bits (two chars) at a
    # time from a table, several times faster than base64.b32encode.
    return _time_chars(ms) + _entropy_chars(entropy >> 10) + _PAIRS[entropy & 1023]


#: Two Crockford chars for every 10-bit value.
_PAIRS: tuple[str, ...] = tuple(a + b for a in _CROCK_ALPHABET for b in _CROCK_ALPHABET)


def _time_chars(ms: int) -> str:
    """The 10 chars of a 48-bit millisecond time (50 bits, MSB first)."""
    p = _PAIRS
    return p[ms >> 40] + p[(ms >> 30) & 1023] + p[(ms >> 20) & 1023] + p[(ms >> 10) & 1023] + p[ms & 1023]


def _entropy_chars(high: int) -> str:
    """The first 14 chars of the entropy: its top 70 bits (``entropy >> 10``)."""
    p = _PAIRS
    low = high & 0xFFFFFFFFFF  # 40 bits: small-int arithmetic below
    high >>= 40
    return (
        p[high >> 20]
        + p[(high >> 10) & 1023]
        + p[high & 1023]
        + p[low >> 30]
        + p[(low >> 20) & 1023]
        + p[(low >> 10) & 1023]
        + p[low & 1023]
    )


class UlidGenerator:
    """Monotonic ULIDs for one process (SPEC §2.5); thread-safe.

    In the millisecond of the previous ULID (or an earlier one, after a clock
    step back) the entropy is the previous entropy + 1; when that would
    overflow 80 bits the generator waits for the next millisecond.  Otherwise
    it draws 80 fresh bits from the OS CSPRNG.

    ``time_ns`` and ``random_bits`` default to the wall clock and
    ``os.urandom``; tests pass scripted sources to exercise overflow.
    """

    def __init__(
        self,
        time_ns: Callable[[], int] = time.time_ns,
        random_bits: Callable[[], int] | None = None,
    ) -> None:
        self._time_ns = time_ns
        self._random_bits = random_bits or _urandom_80
        self._last_ms = -1
        self._last_entropy = 0
        self._lock = _thread.allocate_lock()
        # The first 24 chars of the last ULID and the (ms, entropy >> 10) they encode:
        # consecutive ULIDs of one millisecond differ only in the last two chars.
        self._text_key = (-1, -1)
        self._text_prefix = ""

    def _next_locked(self) -> tuple[int, int]:
        ms = self._time_ns() // 1_000_000
        if ms <= self._last_ms:
            entropy = self._last_entropy + 1
            if entropy <= ULID_MAX_ENTROPY:
                self._last_entropy = entropy
                return self._last_ms, entropy
            while ms <= self._last_ms:
                time.sleep(0.0001)
                ms = self._time_ns() // 1_000_000
        entropy = self._random_bits()
        self._last_ms, self._last_entropy = ms, entropy
        return ms, entropy

    def next_parts(self) -> tuple[int, int]:
        """Return the next ``(ms, entropy)`` pair, strictly greater than the previous one."""
        with self._lock:
            return self._next_locked()

    def new(self) -> str:
        """Return the next ULID as 26 Crockford chars."""
        with self._lock:
            ms, entropy = self._next_locked()
            key = (ms, entropy >> 10)
            if key != self._text_key:
                self._text_prefix = ulid_str(ms, entropy)[:24]  # checks the ranges
                self._text_key = key
            return self._text_prefix + _PAIRS[entropy & 1023]


def _urandom_80() -> int:
    return int.from_bytes(os.urandom(10), "big")


_GENERATOR = UlidGenerator()


def new_ulid() -> str:
    """Return a new monotonic ULID from the process-wide generator."""
    return _GENERATOR.new()


def new_id(prefix: str) -> str:
    """Return ``<prefix>_<ULID>`` (``new_id("evt")`` → ``evt_01K…``)."""
    return f"{prefix}_{_GENERATOR.new()}"


def new_event_id() -> str:
    """Return a new ``evt_`` id."""
    return new_id("evt")


def new_message_id() -> str:
    """Return a new ``msg_`` id."""
    return new_id("msg")


def new_session_id() -> str:
    """Return a new ``ses_`` id."""
    return new_id("ses")


def new_thread_id() -> str:
    """Return a new ``thr_`` id."""
    return new_id("thr")


def new_group_id() -> str:
    """Return a new ``grp_`` id."""
    return new_id("grp")


def new_daemon_id() -> str:
    """Return a new daemon id, ``d_`` + ULID (created once per repository)."""
    return new_id("d")


# ---------------------------------------------------------------------------
# repo_id (SPEC §3.1)

# Go's strings.TrimSpace: ASCII whitespace, U+0085, U+00A0 and Unicode White_Space.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_LETTERS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ALNUM = _LETTERS | frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")
# ASCII bytes Go's net/url allows unescaped in a host (shouldEscape(c, encodeHost) is false).
_HOST_OK = _ALNUM | frozenset(b"-_.~!$&'()*+,;=:[]<>\"")
# Go's validUserinfo (it iterates runes, so any non-ASCII is refused too).
_USERINFO_OK = _ALNUM | frozenset(b"-._:~!$&'()*+,;=%@")

_PATH, _HOST, _ZONE = 0, 1, 2


class _UrlError(ValueError):
    pass


def _unescape(s: bytes, mode: int) -> bytes:
    """Go ``url.unescape`` in path/userinfo/fragment (``_PATH``), host or zone mode."""
    out = bytearray()
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == 0x25:  # %
            if i + 2 >= n or s[i + 1] not in _HEX or s[i + 2] not in _HEX:
                raise _UrlError("invalid URL escape")
            v = int(s[i + 1 : i + 3], 16)
            if s[i : i + 3] != b"%25":
                # A host may %-escape only non-ASCII bytes; a zone only bytes
                # it could also hold unescaped (or a space).
                if mode == _HOST and v < 0x80:
                    raise _UrlError("invalid URL escape in host")
                if mode == _ZONE and v != 0x20 and (v >= 0x80 or v not in _HOST_OK):
                    raise _UrlError("invalid URL escape in zone")
            out.append(v)
            i += 3
            continue
        if mode != _PATH and c < 0x80 and c not in _HOST_OK:
            raise _UrlError("invalid character in host")
        out.append(c)
        i += 1
    return bytes(out)


def _valid_port(colon_port: bytes) -> bool:
    if not colon_port:
        return True
    return colon_port[:1] == b":" and all(0x30 <= b <= 0x39 for b in colon_port[1:])


def _parse_host(host: bytes) -> bytes:
    """Go ``parseHost``: validate the port and unescape; raises ``_UrlError``."""
    if host.startswith(b"["):
        i = host.rfind(b"]")
        if i < 0:
            raise _UrlError("missing ']' in host")
        if not _valid_port(host[i + 1 :]):
            raise _UrlError("invalid port")
        zone = host.find(b"%25", 0, i)
        if zone >= 0:
            return _unescape(host[:zone], _HOST) + _unescape(host[zone:i], _ZONE) + _unescape(host[i:], _HOST)
    else:
        i = host.rfind(b":")
        if i >= 0 and not _valid_port(host[i:]):
            raise _UrlError("invalid port")
    return _unescape(host, _HOST)


def _go_url_host_path(raw: bytes) -> tuple[bytes, bytes]:
    """Host and decoded path of ``raw`` parsed like Go's ``url.Parse``; raises ``_UrlError``."""
    raw, _, frag = raw.partition(b"#")
    if any(b < 0x20 or b == 0x7F for b in raw):
        raise _UrlError("control character in URL")
    if frag:
        _unescape(frag, _PATH)  # Go refuses a malformed escape in the fragment too
    if raw == b"*":
        return b"", b"*"
    # getScheme: letters, then letters/digits/+-. up to the first ':'.
    scheme, rest = b"", raw
    for i, c in enumerate(raw):
        if c in _LETTERS:
            continue
        if c in b"0123456789+-.":
            if i == 0:
                break
            continue
        if c == 0x3A:  # ':'
            if i == 0:
                raise _UrlError("missing protocol scheme")
            scheme, rest = raw[:i], raw[i + 1 :]
        break
    rest = rest.partition(b"?")[0]
    if not rest.startswith(b"/"):
        if scheme:
            return b"", b""  # opaque URL (scheme:rest): no host, no path
        if b":" in rest.partition(b"/")[0]:
            raise _UrlError("first path segment in URL cannot contain colon")
    host = b""
    if (scheme or not rest.startswith(b"///")) and rest.startswith(b"//"):
        authority, slash, path = rest[2:].partition(b"/")
        rest = slash + path
        at = authority.rfind(b"@")
        if at >= 0:
            userinfo = authority[:at]
            if any(b not in _USERINFO_OK for b in userinfo):
                raise _UrlError("invalid userinfo")
            for part in userinfo.split(b":", 1):
                _unescape(part, _PATH)
            authority = authority[at + 1 :]
        host = _parse_host(authority)
    return host, _unescape(rest, _PATH)


def origin_to_repo_input(url: str | None) -> str | None:
    """Return the repo_id input N for an ``origin`` URL (SPEC §3.1 step 1), or ``None``.

    ``git@host:path`` → ``https://host/path`` (host case kept); anything else is
    parsed with Go ``net/url`` rules → ``https://`` + lowercase host (with port,
    without userinfo) + percent-decoded path, minus one trailing ``.git``.
    ``None`` means "no usable origin" (missing, blank, ``git@`` without ``:``,
    or not parseable); the caller then uses the path (step 2).
    """
    if url is None:
        return None
    s = url.strip(_GO_SPACE)
    if not s:
        return None
    if s.startswith("git@"):
        host, colon, path = s.partition(":")
        if not colon:
            return None
        return f"https://{host[4:]}/{path.removesuffix('.git')}"
    # Work on bytes like Go; surrogateescape round-trips undecodable bytes.
    try:
        host_b, path_b = _go_url_host_path(s.encode("utf-8", "surrogateescape"))
    except (_UrlError, UnicodeEncodeError):
        return None
    host = host_b.decode("utf-8", "surrogateescape").lower()
    path = path_b.decode("utf-8", "surrogateescape").removesuffix(".git")
    return f"https://{host}{path}"


def repo_id_for(origin_url: str | None, main_root: str) -> str:
    """Return ``r_`` + 12 Crockford chars of sha256(N) (SPEC §3.1).

    N comes from ``origin_url`` when usable, else ``file://`` + the absolute,
    symlink-resolved ``main_root`` (the main worktree root), ``/`` separators,
    no trailing ``/``.
    """
    n = origin_to_repo_input(origin_url)
    if n is None:
        root = os.path.realpath(main_root).replace(os.sep, "/")
        if len(root) > 1:
            root = root.rstrip("/")
        n = "file://" + root
    return "r_" + crock(_sha256(n.encode("utf-8", "surrogateescape")).digest())[:12]


def unnamed_agent_id(repo_id: str, role: str, module: str) -> str:
    """Return the generated id of an agent registered without a name (SPEC §3)."""
    digest = _sha256(f"{repo_id}|{role}|{module}".encode()).digest()
    return f"{role}_{crock(digest)[:10].lower()}"


# ---------------------------------------------------------------------------
# Computed event ids (SPEC §3.2, §6.8)

_SESSION_ALIASES = frozenset({"session.start", "session.end"})


def _go_event_id(text: str, ms: int) -> str:
    h = _sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return "evt_" + ulid_str(ms, int.from_bytes(h[:10].encode("ascii"), "big"))


def event_id_of(obj: Mapping[str, Any]) -> str:
    """Return the event's ``event_id``, computing it when the line has none (SPEC §3.2).

    A non-empty string ``event_id`` is returned as is.  Otherwise, for
    ``message.*`` (entity ``message_id``), ``agent.register``/``agent.update``
    (``agent_id``) and other ``agent.*`` plus ``session.start``/``session.end``
    (``session_id``) with a parseable timestamp, the Go formula is used; a
    missing or ``null`` entity counts as ``""``.  Every other line — other types, an
    unparseable timestamp, or an entity that is present but not a string (the
    Go tool could not have read such a line) — gets ``evt_h`` + 32 hex chars
    of sha256 of the object's canonical JSON.
    """
    eid = obj.get("event_id")
    if type(eid) is str and eid:
        return eid
    typ = obj.get("type")
    ts = obj.get("timestamp")
    if type(typ) is str and type(ts) is str:
        if typ.startswith("message."):
            key: str | None = "message_id"
        elif typ in ("agent.register", "agent.update"):
            key = "agent_id"
        elif typ.startswith("agent.") or typ in _SESSION_ALIASES:
            key = "session_id"
        else:
            key = None
        if key is not None:
            entity = obj.get(key)
            if entity is None:  # missing, or null (Go leaves a string field empty for null)
                entity = ""
            ns = timefmt.parse_ts_ns(ts)
            if type(entity) is str and ns is not None:
                return _go_event_id(f"{typ}:{ts}:{entity}", ns // 1_000_000)
    return "evt_h" + _sha256(canonical_bytes(obj)).hexdigest()[:32]


def go_receipt_event_id(message_id: str, agent_id: str, read_at_ms: int) -> str:
    """Event id of a receipt imported from a Go database (SPEC §6.8).

    ``"evt_" + ULID(read_at_ms, ASCII of hex(sha256("message.receipt:" +
    message_id + ":" + agent_id))[:10])`` — deterministic, so re-runs and other
    clones deduplicate.
    """
    return _go_event_id(f"message.receipt:{message_id}:{agent_id}", read_at_ms)


# ---------------------------------------------------------------------------
# Shards (SPEC §3.3)

_SIMPLE_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
_SHARD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def shard_name(actor: str) -> str:
    """File name (without ``.jsonl``) under ``messages/`` for acting id ``actor`` (SPEC §3.3)."""
    # strip() leaves nothing exactly when every char is in the set: ^[a-z0-9_]+$.
    if actor and not actor.strip(_SIMPLE_ID_CHARS):
        return actor
    name = "".join(c if c in _SHARD_CHARS else "_" for c in actor.removeprefix("agent:")[:100])
    return name or "_unresolved"


# ---------------------------------------------------------------------------
# Tokens and pairing codes (SPEC §3)


def new_user_token() -> str:
    """Return a new user token: ``tok_`` + 64 lowercase hex (32 CSPRNG bytes)."""
    return "tok_" + os.urandom(32).hex()


def new_peer_token() -> str:
    """Return a new peer token: 64 lowercase hex (32 CSPRNG bytes)."""
    return os.urandom(32).hex()


def new_pairing_code(n: int) -> str:
    """Return an ``n``-digit decimal pairing code, ``secrets.randbelow(10**n)`` zero-padded."""
    if n < 1:
        raise ValueError(f"pairing code length must be at least 1, not {n}")
    import secrets  # lazy: pulls in random, ~10 ms

    return f"{secrets.randbelow(10**n):0{n}d}"


def token_sha256(token: str) -> str:
    """Return the lowercase hex sha256 of a token's UTF-8 (the only form stored)."""
    return _sha256(token.encode("utf-8")).hexdigest()
