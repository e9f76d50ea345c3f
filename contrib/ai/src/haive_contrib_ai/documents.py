"""DocumentDataSource: the documents of a folder (text, Markdown, PDF) as a pipeline source."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, ClassVar

import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.sources import DataSource

from .records import Document

#: File suffix -> format name.
FORMATS: dict[str, str] = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".pdf": "pdf",
}
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_FRONT_MATTER_TITLE = re.compile(r"\A---\s*\n(?:.*\n)*?title:\s*(.+?)\s*\n(?:.*\n)*?---\s*\n")


def _pdf_available() -> bool:
    try:
        import pypdf  # noqa: F401
    except ImportError:
        return False
    return True


def _read_pdf(path: Path) -> tuple[str, dict[str, Any]]:
    import pypdf

    reader = pypdf.PdfReader(str(path))
    pages: list[str] = []
    page_starts: list[int] = []
    position = 0
    for page in reader.pages:
        page_starts.append(position)
        text = (page.extract_text() or "").strip()
        pages.append(text)
        position += len(text) + 2
    return "\n\n".join(pages), {"pages": len(pages), "page_starts": page_starts}


def _title(text: str, fmt: str, path: Path) -> str:
    if fmt == "markdown":
        front = _FRONT_MATTER_TITLE.match(text)
        if front:
            return front.group(1).strip("'\"")
        heading = _HEADING.search(text)
        if heading:
            return heading.group(1)
    return path.stem


class DocumentDataSource(DataSource):
    """Reads every text, Markdown and (with ``pypdf`` installed) PDF file under ``folder``.

    Each file becomes one :class:`~haive_contrib_ai.records.Document` whose ``id`` is its path
    relative to the folder (stable across runs, so chunk ids and vector-store upserts are
    too), with metadata ``source``, ``format``, ``title``, ``size`` and ``modified`` (and
    ``pages`` / ``page_starts`` for PDFs). Files are read in worker threads, in name order.

    ``formats`` limits the formats read (default: text and Markdown, plus PDF when pypdf is
    installed). A PDF that cannot be read because pypdf is missing is an error, never a
    silent skip; so is a file that is not valid ``encoding``.

    Example::

        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "a.md").write_text("# Trio\\n\\nStructured concurrency.")
        >>> _ = (folder / "b.txt").write_text("Plain text.")
        >>> async def main():
        ...     async with DocumentDataSource(folder) as source:
        ...         return [d for batch in [b async for b in source.batches(10)] for d in batch]
        >>> [(d.id, d.metadata["title"], d.metadata["format"]) for d in trio.run(main)]
        [('a.md', 'Trio', 'markdown'), ('b.txt', 'b', 'text')]
    """

    PLUGIN_NAME: ClassVar[str] = "documents"

    def __init__(
        self,
        folder: str | Path,
        *,
        formats: Iterable[str] | None = None,
        recursive: bool = True,
        encoding: str = "utf-8",
        files_per_batch: int = 16,
    ) -> None:
        self.folder = Path(folder)
        known = set(FORMATS.values())
        if formats is None:
            chosen = {"text", "markdown"} | ({"pdf"} if _pdf_available() else set())
        else:
            chosen = set(formats)
            unknown = chosen - known
            if unknown:
                raise ConfigError(
                    f"DocumentDataSource: unknown format(s) {sorted(unknown)}; known: {sorted(known)}"
                )
            if "pdf" in chosen and not _pdf_available():
                raise ConfigError(
                    "DocumentDataSource: formats include 'pdf' but pypdf is not installed: "
                    "pip install 'haive-contrib-ai[pdf]'"
                )
        self._formats_given = formats is not None
        self.formats = frozenset(chosen)
        self.recursive = recursive
        self.encoding = encoding
        if not isinstance(files_per_batch, int) or files_per_batch < 1:
            raise ConfigError(
                f"DocumentDataSource: files_per_batch must be >= 1, got {files_per_batch!r}"
            )
        self.files_per_batch = files_per_batch
        self.read = 0

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            raise ConfigError(f"DocumentDataSource: {self.folder} is not a folder")
        pattern = "**/*" if self.recursive else "*"
        files: list[Path] = []
        unreadable_pdfs: list[Path] = []
        for path in sorted(self.folder.glob(pattern)):
            rel_parts = path.relative_to(self.folder).parts
            if not path.is_file() or any(part.startswith(".") for part in rel_parts):
                continue
            fmt = FORMATS.get(path.suffix.lower())
            if fmt in self.formats:
                files.append(path)
            elif fmt == "pdf" and not self._formats_given:
                unreadable_pdfs.append(path)
        if unreadable_pdfs:
            names = ", ".join(p.name for p in unreadable_pdfs[:3])
            raise ConfigError(
                f"DocumentDataSource: {self.folder} holds PDF files ({names}) but pypdf is not "
                "installed: pip install 'haive-contrib-ai[pdf]', or pass "
                "formats=('text', 'markdown') to leave PDFs out"
            )
        return files

    def _read(self, path: Path) -> Document:
        fmt = FORMATS[path.suffix.lower()]
        stat = path.stat()
        metadata: dict[str, Any] = {}
        if fmt == "pdf":
            text, metadata = _read_pdf(path)
        else:
            try:
                text = path.read_text(encoding=self.encoding)
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path} is not valid {self.encoding} text: {exc}") from None
        rel = path.relative_to(self.folder).as_posix()
        metadata.update(
            source=str(path),
            format=fmt,
            title=_title(text, fmt, path),
            size=stat.st_size,
            modified=stat.st_mtime,
        )
        return Document(rel, text, str(path), metadata)

    def _read_many(self, paths: list[Path]) -> list[Document]:
        return [self._read(path) for path in paths]

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        files = await trio.to_thread.run_sync(self._files)
        step = max(1, min(chunk_size, self.files_per_batch))
        for index in range(0, len(files), step):
            docs = await trio.to_thread.run_sync(self._read_many, files[index : index + step])
            self.read += len(docs)
            yield docs
