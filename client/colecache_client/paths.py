"""Where colecache keeps data when nobody says otherwise: one fixed place per user, never the current directory.

The server's default SQLite cache and the NAS-Bench-201 lookup both start here, so running a
command from another folder finds the same cache and the same benchmark table.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """`$XDG_DATA_HOME/colecache`, else `~/.local/share/colecache` (XDG base directories).

    A relative `XDG_DATA_HOME` is ignored, as the XDG specification asks: it would depend on the
    current directory, which is what this location exists to avoid."""
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg and Path(xdg).expanduser().is_absolute() else Path.home() / ".local" / "share"
    return base / "colecache"


def source_checkout() -> Path | None:
    """The repository root when this package runs from a source checkout (`client/colecache_client`), else None."""
    package = Path(__file__).resolve().parent
    root = package.parents[1]
    if package.parent.name == "client" and (package.parent / "pyproject.toml").is_file():
        return root
    return None
