"""``thrum version``: thrum's version, Python, platform and where to read more."""

from __future__ import annotations

import sys
from typing import Any

import click

from thrum_core.markers import hookimpl

REPO_URL = "https://github.com/leonletto/thrum"
DOCS_URL = "https://github.com/leonletto/thrum#readme"


def version_info() -> dict[str, Any]:
    """``{version, python, platform, repo_url, docs_url}`` (SPEC §15.4)."""
    import platform

    from thrum_core import __version__

    return {
        "version": __version__,
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}" if platform.machine() else sys.platform,
        "repo_url": REPO_URL,
        "docs_url": DOCS_URL,
    }


def _human(info: dict[str, Any]) -> None:
    click.echo(f"thrum {info['version']} (Python {info['python']}, {info['platform']})")
    click.echo(f"source: {info['repo_url']}")
    click.echo(f"docs:   {info['docs_url']}")


@click.command("version")
def version() -> None:
    """Show thrum's version."""
    from thrum_cli.output import emit

    emit(version_info(), _human)


@hookimpl
def thrum_register_commands(cli: click.Group) -> None:
    cli.add_command(version)
