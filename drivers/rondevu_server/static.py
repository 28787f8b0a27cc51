"""The browser client's files, served under ``/web/`` (our addition; docs/live-page.md).

The files ship inside this package (``rondevu_server/web/``) and are read once, when the
app is built: a request can only ever name one of them, looked up in a dict, so no path
from the client reaches the file system (no traversal, no symlinks followed at request
time, nothing written later appears).  Only the suffixes below are served, each with
its content type; a file past `MAX_FILE_BYTES` is a packaging mistake and is refused at
load.  Replies carry an ETag and ``Cache-Control: no-cache``: a browser keeps the file
and asks each time whether it changed (a 304 costs a header), so an upgraded server is
never shadowed by a stale cached script.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["MAX_FILE_BYTES", "PREFIX", "StaticFile", "WebFiles"]

PREFIX = "/web/"
"""Where the files are served; ``/web/`` itself is ``index.html``."""
MAX_FILE_BYTES = 1 << 20
"""Largest file served (the client's files are a few KiB each)."""

_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.[a-z]+$")
# The page and its modules come from this server only, and may call only it: an
# injected script or a framed page gets nowhere.
_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One servable file: its bytes and the headers every reply of it carries."""

    body: bytes
    content_type: bytes
    etag: bytes

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Response headers, without content-length (a 304 has no body)."""
        return [
            (b"content-type", self.content_type),
            (b"etag", self.etag),
            (b"cache-control", b"no-cache"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"content-security-policy", _CSP),
        ]


class WebFiles:
    """The files of one folder of the package, by request path."""

    def __init__(self, files: dict[str, StaticFile]) -> None:
        self._files = files

    @classmethod
    def load(cls, package: str = "rondevu_server", folder: str = "web") -> WebFiles:
        """Read every servable file of ``package``'s ``folder`` (not its subfolders)."""
        files: dict[str, StaticFile] = {}
        root = resources.files(package) / folder
        for entry in root.iterdir():
            name = entry.name
            suffix = name[name.rfind(".") :] if "." in name else ""
            if not entry.is_file() or not _NAME.match(name) or suffix not in _TYPES:
                continue
            body = entry.read_bytes()
            if len(body) > MAX_FILE_BYTES:
                raise ValueError(f"{name} is larger than {MAX_FILE_BYTES} bytes")
            digest = hashlib.sha256(body).hexdigest()[:20]
            files[PREFIX + name] = StaticFile(body, _TYPES[suffix], b'"%s"' % digest.encode())
        if "index.html" in {path.removeprefix(PREFIX) for path in files}:
            files[PREFIX] = files[PREFIX + "index.html"]
        return cls(files)

    def get(self, path: str) -> StaticFile | None:
        """The file a request path names, or None."""
        return self._files.get(path)

    def paths(self) -> list[str]:
        """Every path served."""
        return sorted(self._files)
