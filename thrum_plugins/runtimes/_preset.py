"""The built-in runtime presets' shared machinery: detection signals, generated files, merging.

A :class:`Preset` is data (SPEC §9.3 ``runtime.list``/``runtime.show``, §15.5 step 7): how to recognise
the AI tool, where its instructions file goes, where its MCP server configuration goes, which hook
runs ``thrum prime`` at session start and where its skills live. It follows
:class:`thrum_core.interfaces.Runtime` (``name``, ``display``, ``detect``, ``files``) plus ``merge``
(used for the ``merge`` policy) and the detection tiers :mod:`thrum_plugins.runtimes._select` ranks.

Files a user may already own are merged, never replaced: a markdown instructions file gets the block
between ``<!-- BEGIN THRUM -->`` and ``<!-- END THRUM -->`` (added, or replaced in place); a JSON
configuration gets thrum's keys (other keys and list items are kept; a file that is not valid JSON is
left alone). Files thrum owns outright (a Cursor rule, a skill) are ``managed``.

Standard library only: ``thrum init`` and ``thrum quickstart`` import it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BLOCK_BEGIN", "BLOCK_END", "Preset", "instructions_block", "merge_block", "merge_json"]

BLOCK_BEGIN = "<!-- BEGIN THRUM -->"
BLOCK_END = "<!-- END THRUM -->"

#: The MCP server every preset with MCP support registers (SPEC §16).
MCP_COMMAND = ["thrum", "mcp", "serve"]


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class Preset:
    """An AI coding tool thrum generates files for.

    ``env_vars`` are variables the tool itself sets in the processes it runs (its shell tool, hooks):
    seeing one means thrum runs inside that tool. ``ide_env_vars`` are weaker (an editor's integrated
    terminal, where a person may be typing). ``markers`` are repository paths the tool's users keep.
    ``mcp_style`` is ``"mcpServers"`` (``{"mcpServers": {name: {command, args}}}``, used by Claude Code,
    Cursor and Gemini CLI) or ``"opencode"`` (``{"mcp": {name: {type: "local", command: [...]}}}``).
    """

    name: str
    display: str
    env_vars: tuple[str, ...] = ()
    ide_env_vars: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()
    instructions_file: str | None = None
    rule_file: str | None = None
    mcp_file: str | None = None
    mcp_style: str = "mcpServers"
    session_hook_file: str | None = None
    skills_dir: str | None = None
    notes: str = ""
    extra_features: tuple[str, ...] = field(default=())

    # -- detection -----------------------------------------------------------------------------------
    def detect_env(self, environ: Mapping[str, str]) -> bool:
        """Whether a variable the tool sets in its own processes is present (and not ``0``/``false``)."""
        return any(_truthy(environ.get(name)) for name in self.env_vars)

    def detect_ide(self, environ: Mapping[str, str]) -> bool:
        """Whether an editor-terminal variable of the tool is present."""
        return any(_truthy(environ.get(name)) for name in self.ide_env_vars)

    def detect_repo(self, cwd: Path) -> bool:
        """Whether the repository at ``cwd`` holds one of the tool's marker paths."""
        return any(os.path.lexists(os.path.join(cwd, marker)) for marker in self.markers)

    def detect(self, environ: Mapping[str, str], cwd: Path) -> bool:
        """Any signal: own process variable, editor terminal, or repository marker."""
        return self.detect_env(environ) or self.detect_ide(environ) or self.detect_repo(cwd)

    # -- description ---------------------------------------------------------------------------------
    @property
    def features(self) -> list[str]:
        """What thrum sets up for the tool: ``instructions``, ``mcp``, ``hooks``, ``skills``, ..."""
        out = []
        if self.instructions_file or self.rule_file:
            out.append("instructions")
        if self.mcp_file:
            out.append("mcp")
        if self.session_hook_file:
            out.append("hooks")
        if self.skills_dir:
            out.append("skills")
        return [*out, *self.extra_features]

    def templates(self, skills_only: bool = False) -> list[tuple[str, str]]:
        """``(relative path, policy)`` of the files :meth:`files` writes."""
        if skills_only:
            return [(self.skill_path, "managed")] if self.skills_dir else []
        out: list[tuple[str, str]] = []
        if self.instructions_file:
            out.append((self.instructions_file, "merge"))
        if self.rule_file:
            out.append((self.rule_file, "managed"))
        if self.mcp_file:
            out.append((self.mcp_file, "merge"))
        if self.session_hook_file:
            out.append((self.session_hook_file, "merge"))
        return out

    @property
    def skill_path(self) -> str:
        return f"{self.skills_dir}/thrum/SKILL.md"

    def describe(self) -> dict[str, Any]:
        """The data part of ``runtime.show`` (without ``detected``)."""
        return {
            "name": self.name,
            "display": self.display,
            "files": [path for path, _ in self.templates()],
            "features": self.features,
            "instructions_file": self.instructions_file or self.rule_file,
            "mcp_config": self.mcp_file,
            "hooks_file": self.session_hook_file,
            "skills_dir": self.skills_dir,
            "env_vars": list(self.env_vars + self.ide_env_vars),
            "markers": list(self.markers),
            "notes": self.notes,
        }

    # -- generated files ------------------------------------------------------------------------------
    def files(self, context: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        """``(relative path, content, policy)`` for ``init``/``quickstart`` (SPEC §15.5 step 7)."""
        out: list[tuple[str, str, str]] = []
        for path, policy in self.templates(bool(context.get("skills_only"))):
            out.append((path, self._content(path, context), policy))
        return out

    def _content(self, path: str, context: Mapping[str, Any]) -> str:
        if path == self.instructions_file:
            return instructions_block(context) + "\n"
        if path == self.rule_file:
            return cursor_rule(context)
        if path == self.mcp_file:
            return _json_text(self.mcp_config())
        if path == self.session_hook_file:
            return _json_text(session_hook_config())
        if self.skills_dir and path == self.skill_path:
            return skill_file(context)
        raise KeyError(path)

    def mcp_config(self) -> dict[str, Any]:
        """thrum's MCP server entry in the tool's configuration format."""
        if self.mcp_style == "opencode":
            return {
                "$schema": "https://opencode.ai/config.json",
                "mcp": {"thrum": {"type": "local", "command": list(MCP_COMMAND), "enabled": True}},
            }
        return {"mcpServers": {"thrum": {"command": MCP_COMMAND[0], "args": MCP_COMMAND[1:]}}}

    def merge(self, path: str, existing: str, new: str) -> str:
        """Merge thrum's ``new`` content into a user's ``existing`` file (the ``merge`` policy)."""
        if path.endswith(".json"):
            return merge_json(existing, new)
        return merge_block(existing, new)


# ------------------------------------------------------------------------------------------ contents


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def session_hook_config() -> dict[str, Any]:
    """A Claude Code ``SessionStart`` hook that prints ``thrum prime`` into the new session's context."""
    return {"hooks": {"SessionStart": [{"hooks": [{"type": "command", "command": "thrum prime"}]}]}}


def _identity_line(context: Mapping[str, Any]) -> tuple[str, str, str]:
    return (
        str(context.get("agent_name") or "default_agent"),
        str(context.get("agent_role") or "implementer"),
        str(context.get("agent_module") or "main"),
    )


def instructions_block(context: Mapping[str, Any]) -> str:
    """The thrum section of an instructions file (CLAUDE.md, AGENTS.md, GEMINI.md), markers included.

    ``single_agent_mode`` (D13) only changes the wording: one agent still uses thrum for its notes,
    intent and messages from people, and the same commands work when more agents join.
    """
    name, role, module = _identity_line(context)
    repo = context.get("repo_name") or "this repository"
    if context.get("single_agent_mode"):
        intro = (
            f"thrum keeps your identity, intent and saved context for {repo}, and carries messages from "
            "people and from any agent that joins later."
        )
    else:
        intro = (
            f"Several AI agents work on {repo} at the same time. thrum lets you message them and see "
            "what each of them is working on; check before you edit a file someone else is changing."
        )
    return "\n".join(
        [
            BLOCK_BEGIN,
            "## Coordination with thrum",
            "",
            intro,
            "",
            f"You act as `{name}` (role `{role}`, module `{module}`). If `thrum whoami` fails, run:",
            f'`thrum quickstart --name {name} --role {role} --module {module} --intent "<what you do>"`',
            "",
            "- `thrum prime` — at the start of a session: who you are, your inbox, the team, your context",
            "- `thrum inbox --unread` and `thrum wait --timeout 60s` — read and wait for messages",
            '- `thrum send "text" --to @name` (also `@role`, `@group`, `@everyone`); `thrum reply ID "text"`',
            "- `thrum team` and `thrum who-has FILE` — who works on what, before you touch shared files",
            '- `thrum session set-intent "..."` when your goal changes; `thrum context save` before you stop',
            BLOCK_END,
        ]
    )


def cursor_rule(context: Mapping[str, Any]) -> str:
    """A Cursor project rule (``.mdc``) applied to every request."""
    body = instructions_block(context)
    return (
        "---\ndescription: Coordinate with other agents through thrum\nalwaysApply: true\n---\n\n"
        + body
        + "\n"
    )


def skill_file(context: Mapping[str, Any]) -> str:
    """An Agent Skills ``SKILL.md`` (name + description front matter) teaching the thrum commands."""
    return (
        "---\n"
        "name: thrum\n"
        "description: Message the other AI agents on this repository and see what they are working on "
        "(inbox, send, reply, wait, team, who-has). Use when starting work, before editing shared files, "
        "or when asked to coordinate with other agents.\n"
        "---\n\n" + instructions_block(context) + "\n"
    )


# ------------------------------------------------------------------------------------------- merging


def merge_block(existing: str, block: str) -> str:
    """``existing`` with thrum's marked block replaced in place, or appended after a blank line."""
    block = block.strip("\n")
    start = existing.find(BLOCK_BEGIN)
    end = existing.find(BLOCK_END, start + 1) if start >= 0 else -1
    if start >= 0 and end >= 0:
        return existing[:start] + block + existing[end + len(BLOCK_END) :]
    if not existing.strip():
        return block + "\n"
    return existing.rstrip("\n") + "\n\n" + block + "\n"


def _merge_values(mine: Any, theirs: Any) -> Any:
    if isinstance(mine, dict) and isinstance(theirs, dict):
        out = dict(theirs)
        for key, value in mine.items():
            out[key] = _merge_values(value, theirs[key]) if key in theirs else value
        return out
    if isinstance(mine, list) and isinstance(theirs, list):
        return theirs + [item for item in mine if item not in theirs]
    return mine


def merge_json(existing: str, new: str) -> str:
    """thrum's keys of ``new`` merged into the JSON object ``existing`` (unchanged if it is not one).

    Objects merge key by key; lists keep the user's items and gain thrum's missing ones; a scalar
    thrum sets takes thrum's value. Key order of the user's file is kept.
    """
    try:
        theirs = json.loads(existing) if existing.strip() else {}
    except ValueError:
        return existing
    if not isinstance(theirs, dict):
        return existing
    merged = _merge_values(json.loads(new), theirs)
    text = _json_text(merged)
    return existing if merged == theirs and existing.strip() else text
