"""Ways to change a signed PDF afterwards, each as a well-formed incremental update
(what an editor would write) or as a raw byte change (what a forger might try)."""

from __future__ import annotations

from io import BytesIO

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter


def flip_byte_in_text(pdf: bytes, text: bytes = b"Algorithms A") -> bytes:
    """Change one byte inside the signed page content: "A" becomes "B"."""
    position = pdf.index(text) + len(text) - 1
    changed = bytearray(pdf)
    changed[position] ^= ord("A") ^ ord("B")
    return bytes(changed)


def _finish(writer: IncrementalPdfFileWriter) -> bytes:
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def add_page(pdf: bytes) -> bytes:
    writer = IncrementalPdfFileWriter(BytesIO(pdf), strict=False)
    content = generic.StreamObject(stream_data=b"BT /F1 12 Tf 72 760 Td (Extra) Tj ET")
    page = generic.DictionaryObject(
        {
            pdf_name("/Type"): pdf_name("/Page"),
            pdf_name("/MediaBox"): generic.ArrayObject(
                [generic.NumberObject(n) for n in (0, 0, 595, 842)]
            ),
            pdf_name("/Contents"): writer.add_object(content),
            pdf_name("/Resources"): generic.DictionaryObject(),
        }
    )
    writer.insert_page(page)
    return _finish(writer)


def change_text(pdf: bytes) -> bytes:
    """Rewrite the first page's content stream: "A" grade becomes "A+"."""
    writer = IncrementalPdfFileWriter(BytesIO(pdf), strict=False)
    page_ref = writer.root["/Pages"]["/Kids"].raw_get(0)
    page = page_ref.get_object()
    contents_ref = page.raw_get("/Contents")
    stream = contents_ref.get_object()
    data = stream.data.replace(b"Algorithms A", b"Algorithms A+")
    writer.mark_update(contents_ref)
    stream._data = data
    stream._encoded_data = None
    if "/Filter" in stream:
        del stream["/Filter"]
    return _finish(writer)


def add_annotation(pdf: bytes) -> bytes:
    writer = IncrementalPdfFileWriter(BytesIO(pdf), strict=False)
    page_ref = writer.root["/Pages"]["/Kids"].raw_get(0)
    note = generic.DictionaryObject(
        {
            pdf_name("/Type"): pdf_name("/Annot"),
            pdf_name("/Subtype"): pdf_name("/Text"),
            pdf_name("/Rect"): generic.ArrayObject(
                [generic.NumberObject(n) for n in (72, 600, 92, 620)]
            ),
            pdf_name("/Contents"): generic.TextStringObject("grade corrected"),
        }
    )
    writer.register_annotation(page_ref, writer.add_object(note))
    return _finish(writer)


def add_form_field(pdf: bytes) -> bytes:
    """A text field (not a signature field) on the first page."""
    writer = IncrementalPdfFileWriter(BytesIO(pdf), strict=False)
    page_ref = writer.root["/Pages"]["/Kids"].raw_get(0)
    field = generic.DictionaryObject(
        {
            pdf_name("/Type"): pdf_name("/Annot"),
            pdf_name("/Subtype"): pdf_name("/Widget"),
            pdf_name("/FT"): pdf_name("/Tx"),
            pdf_name("/T"): generic.TextStringObject("remark"),
            pdf_name("/V"): generic.TextStringObject("all grades A"),
            pdf_name("/Rect"): generic.ArrayObject(
                [generic.NumberObject(n) for n in (72, 500, 272, 520)]
            ),
            pdf_name("/P"): page_ref,
        }
    )
    field_ref = writer.add_object(field)
    acroform = writer.root["/AcroForm"]
    acroform["/Fields"].append(field_ref)
    writer.update_container(acroform["/Fields"])
    writer.update_container(acroform)
    writer.register_annotation(page_ref, field_ref)
    return _finish(writer)
