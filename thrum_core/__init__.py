"""thrum's kernel: plugin loading, config, paths and ids, the event log and
projection machinery, JSON-RPC dispatch, the trio nursery tree and lifecycle.

It knows nothing about messages, agents or git: those are plugins.  This
package's ``__init__`` stays import-free so the CLI can import small modules
(``thrum_core.client``, ``thrum_core.paths``) cheaply.
"""

from thrum_core.markers import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]
