"""The ``thrum`` command line: a click root group with lazily loaded commands.

Commands are contributed by plugins through ``thrum_register_commands``.  The
built-in ones are listed in :mod:`thrum_cli.index` so that running one command
imports only its own module (plus click and the stdlib client), never the
whole plugin machinery.  This package's modules stay free of trio, pydantic,
pluggy and other heavy imports; a meta-test holds that.
"""
