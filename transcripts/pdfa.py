"""What reportlab cannot add for PDF/A: XMP, output intent, language, attachment.

``finish`` rewrites reportlab's file once with pypdf, before anything is signed:

- document information (title, author, subject, creator, producer, dates) and the
  same values in an XMP packet that declares PDF/A-3, conformance B;
- an sRGB output intent (ICC profile made by Pillow's littleCMS) so that the
  device colours reportlab writes are defined;
- ``/Lang`` in the catalogue;
- the data file as an associated file (``/AF``, ``AFRelationship /Data``), as
  PDF/A-3 requires for an attachment.

Known gap: no PDF/A validator (veraPDF) runs here, so conformance is declared and
the parts we know of are tested, not proven; see ``docs/transcripts.md``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
from xml.sax.saxutils import escape

from pypdf import PdfReader, PdfWriter
from pypdf.generic import (
    ArrayObject,
    ByteStringObject,
    DecodedStreamObject,
    DictionaryObject,
    NameObject,
    NumberObject,
    TextStringObject,
)

PRODUCER = "campus-card transcripts (ReportLab, pypdf)"


@functools.cache
def srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # type: ignore[no-any-return]


def _pdf_date(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("D:%Y%m%d%H%M%S+00'00'")


def _xmp_date(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def xmp_packet(
    *, title: str, author: str, subject: str, language: str, moment: dt.datetime
) -> bytes:
    when = _xmp_date(moment)
    packet = f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:pdf="http://ns.adobe.com/pdf/1.3/"
    xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/">
   <dc:format>application/pdf</dc:format>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">{escape(title)}</rdf:li></rdf:Alt></dc:title>
   <dc:creator><rdf:Seq><rdf:li>{escape(author)}</rdf:li></rdf:Seq></dc:creator>
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{escape(subject)}</rdf:li></rdf:Alt></dc:description>
   <dc:language><rdf:Bag><rdf:li>{escape(language)}</rdf:li></rdf:Bag></dc:language>
   <xmp:CreateDate>{when}</xmp:CreateDate>
   <xmp:ModifyDate>{when}</xmp:ModifyDate>
   <xmp:MetadataDate>{when}</xmp:MetadataDate>
   <xmp:CreatorTool>campus-card transcripts</xmp:CreatorTool>
   <pdf:Producer>{escape(PRODUCER)}</pdf:Producer>
   <pdfaid:part>3</pdfaid:part>
   <pdfaid:conformance>B</pdfaid:conformance>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""  # noqa: E501 - XMP lines read best unbroken
    return packet.encode("utf-8")


def finish(
    pdf: bytes,
    *,
    title: str,
    author: str,
    subject: str,
    language: str,
    moment: dt.datetime,
    attachment: bytes,
    attachment_name: str,
    attachment_description: str,
) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.add_metadata(
        {
            "/Title": title,
            "/Author": author,
            "/Subject": subject,
            "/Creator": "campus-card transcripts",
            "/Producer": PRODUCER,
            "/CreationDate": _pdf_date(moment),
            "/ModDate": _pdf_date(moment),
        }
    )
    root = writer.root_object

    metadata = DecodedStreamObject()
    metadata.set_data(
        xmp_packet(
            title=title,
            author=author,
            subject=subject,
            language=language,
            moment=moment,
        )
    )
    metadata[NameObject("/Type")] = NameObject("/Metadata")
    metadata[NameObject("/Subtype")] = NameObject("/XML")
    root[NameObject("/Metadata")] = writer._add_object(metadata)

    profile = DecodedStreamObject()
    profile.set_data(srgb_profile())
    profile[NameObject("/N")] = NumberObject(3)
    intent = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/OutputIntent"),
            NameObject("/S"): NameObject("/GTS_PDFA1"),
            NameObject("/OutputConditionIdentifier"): TextStringObject(
                "sRGB IEC61966-2.1"
            ),
            NameObject("/RegistryName"): TextStringObject("http://www.color.org"),
            NameObject("/Info"): TextStringObject("sRGB IEC61966-2.1"),
            NameObject("/DestOutputProfile"): writer._add_object(profile),
        }
    )
    root[NameObject("/OutputIntents")] = ArrayObject([writer._add_object(intent)])
    root[NameObject("/Lang")] = TextStringObject(language)

    embedded = writer.add_attachment(attachment_name, attachment)
    embedded.pdf_object[NameObject("/UF")] = TextStringObject(attachment_name)
    embedded.subtype = NameObject("/application#2Fjson")
    embedded.description = TextStringObject(attachment_description)
    embedded.associated_file_relationship = NameObject("/Data")
    embedded.size = NumberObject(len(attachment))
    embedded.creation_date = moment
    embedded.modification_date = moment
    embedded.checksum = ByteStringObject(hashlib.md5(attachment).digest())  # noqa: S324 - PDF's checksum is MD5 by definition
    root[NameObject("/AF")] = ArrayObject([embedded.pdf_object.indirect_reference])

    # A fixed /ID pair derived from the content: PDF/A needs one, and deriving
    # it keeps the output reproducible for the same input.
    identifier = ByteStringObject(hashlib.md5(pdf + attachment).digest())  # noqa: S324 - an identifier, not security
    writer._ID = ArrayObject([identifier, identifier])

    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
