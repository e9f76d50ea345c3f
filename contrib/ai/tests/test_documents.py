"""DocumentDataSource: text, Markdown and PDF files of a folder, in a pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from haive_contrib_ai import documents
from haive_contrib_ai.chunking import ChunkProcessor
from haive_contrib_ai.documents import DocumentDataSource

from haive.dataflow import ConfigError, NodeError, StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink


def write_pdf(path: Path, pages: list[str]) -> None:
    """A minimal PDF with one line of Helvetica text per page (no PDF library needed)."""
    objects: list[bytes] = []
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    font_ref = 3 + 2 * len(pages)
    for i, text in enumerate(pages):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font_ref} 0 R >> >> >>".encode()
        )
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    path.write_bytes(bytes(out))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "guide.md").write_text("---\ntitle: The Guide\n---\n# Heading\n\nGuide body.\n")
    (tmp_path / "notes.txt").write_text("Plain notes.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.markdown").write_text("# Deep Title\n\nDeep body.\n")
    (tmp_path / ".hidden.txt").write_text("never read")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    write_pdf(tmp_path / "paper.pdf", ["First page text.", "Second page text."])
    return tmp_path


async def read_all(source: DocumentDataSource, chunk_size: int = 100):
    async with source:
        return [doc async for batch in source.batches(chunk_size) for doc in batch]


async def test_reads_text_markdown_and_pdf_with_metadata(folder: Path):
    docs = await read_all(DocumentDataSource(folder))
    assert [d.id for d in docs] == ["guide.md", "notes.txt", "paper.pdf", "sub/deep.markdown"]
    guide, notes, paper, deep = docs
    assert guide.metadata["title"] == "The Guide" and guide.metadata["format"] == "markdown"
    assert deep.metadata["title"] == "Deep Title"
    assert notes.text == "Plain notes.\n" and notes.metadata["title"] == "notes"
    assert notes.source == str(folder / "notes.txt") and notes.metadata["size"] == 13
    assert paper.metadata["format"] == "pdf" and paper.metadata["pages"] == 2
    assert "First page text." in paper.text and "Second page text." in paper.text
    second = paper.metadata["page_starts"][1]
    assert paper.text[second:].startswith("Second page")


async def test_formats_and_recursion_options(folder: Path):
    docs = await read_all(DocumentDataSource(folder, formats=["markdown"], recursive=False))
    assert [d.id for d in docs] == ["guide.md"]
    with pytest.raises(ConfigError, match=r"unknown format\(s\) \['docx'\]"):
        DocumentDataSource(folder, formats=["docx"])


async def test_batches_hold_at_most_chunk_size(folder: Path):
    source = DocumentDataSource(folder, files_per_batch=3)
    async with source:
        sizes = [len(batch) async for batch in source.batches(2)]
    assert sizes == [2, 2] and source.read == 4


async def test_pdfs_without_pypdf_are_an_error_not_a_silent_skip(folder: Path, monkeypatch):
    monkeypatch.setattr(documents, "_pdf_available", lambda: False)
    with pytest.raises(
        ConfigError, match=r"holds PDF files \(paper.pdf\) but pypdf is not installed"
    ):
        await read_all(DocumentDataSource(folder))
    docs = await read_all(DocumentDataSource(folder, formats=("text", "markdown")))
    assert "paper.pdf" not in [d.id for d in docs]
    with pytest.raises(ConfigError, match="formats include 'pdf' but pypdf is not installed"):
        DocumentDataSource(folder, formats=["pdf"])


async def test_missing_folder_and_bad_encoding_name_the_problem(tmp_path: Path):
    pipeline = StreamingPipeline("docs")
    pipeline.set_source(DocumentDataSource(tmp_path / "nope"))
    with pytest.raises(NodeError, match="is not a folder"):
        await pipeline.execute()

    (tmp_path / "latin.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(NodeError, match=r"latin.txt is not valid utf-8 text"):
        await _run(tmp_path)
    docs = await read_all(DocumentDataSource(tmp_path, encoding="latin-1"))
    assert docs[0].text == "café"


async def _run(folder: Path) -> None:
    pipeline = StreamingPipeline("docs")
    pipeline.set_source(DocumentDataSource(folder))
    await pipeline.execute()


async def test_documents_to_chunks_pipeline(folder: Path):
    pipeline = StreamingPipeline("docs")
    pipeline.set_source(DocumentDataSource(folder))
    pipeline.add_node(ChunkProcessor(chunk_size=20, overlap=0))
    sink = MemorySink()
    pipeline.set_sink(sink)
    report = await pipeline.execute()
    assert report.read == 4 and report.failed == 0
    pdf_chunks = [c for c in sink.items if c.doc_id == "paper.pdf"]
    assert [c.metadata["page"] for c in pdf_chunks] == [1, 2]
    assert {c.doc_id for c in sink.items} == {
        "guide.md",
        "notes.txt",
        "paper.pdf",
        "sub/deep.markdown",
    }
