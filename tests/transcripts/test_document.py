"""The issued PDF: text, code on every page, attached data, fonts, metadata,
signature. One real B-LTA issuance, shared by the module (see conftest)."""

from __future__ import annotations

import io
import json
import re
import subprocess

import jsonschema
from pypdf import PdfReader

from transcripts.document import load_schema


def _pages_text(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def test_chinese_and_english_names_and_courses_can_be_read_back(issued_file):
    text = "\n".join(_pages_text(issued_file.pdf))
    flat = re.sub(r"\s+", "", text)

    for expected in ["欧阳娜娜", "Nana Ouyang", "示范大学", "学业成绩单",
                     "Academic Transcript", "数据结构与算法", "中国近现代史纲要",
                     "书法鉴赏", "软件工程", "工学学士", "补考", "重修"]:  # fmt: skip
        assert re.sub(r"\s+", "", expected) in flat, expected
    assert "DataStructuresandAlgorithms" in flat


def test_every_page_carries_the_code_the_address_and_its_page_number(issued_file):
    pages = _pages_text(issued_file.pdf)

    assert len(pages) >= 2, "the course table flows over pages"
    for number, text in enumerate(pages, start=1):
        flat = re.sub(r"\s+", "", text)
        assert issued_file.code in text
        assert f"/v/{issued_file.code}" in flat
        assert f"第{number}页/共{len(pages)}页" in flat
        assert f"Page{number}of{len(pages)}" in flat
        # The table header repeats on every page the table reaches.
        if re.search(r"(MA101|CS201|GE102|EL301)\d", flat):
            assert "课程名称" in flat and "Coursetitle" in flat


def test_every_page_draws_the_qr_code(issued_file):
    reader = PdfReader(io.BytesIO(issued_file.pdf))

    for page in reader.pages:
        forms = page["/Resources"]["/XObject"]
        names = {str(name) for name in forms}
        assert any("qr" in name.lower() for name in names), names


def _attachment(pdf: bytes) -> dict:
    reader = PdfReader(io.BytesIO(pdf))
    attachments = reader.attachments
    assert list(attachments) == ["transcript.json"]
    return json.loads(attachments["transcript.json"][0])


def test_the_attached_data_follows_the_schema_and_equals_the_records(issued_file):
    data = _attachment(issued_file.pdf)

    jsonschema.validate(data, load_schema())
    assert data["student"]["number"] == issued_file.records["number"]
    assert data["student"]["name_zh"] == "欧阳娜娜"
    assert data["issuance"]["verification_code"] == issued_file.code
    attached = sorted(
        (c["code"], c["name_zh"], term["term"], c["exam_kind"], c["mark"])
        for term in data["terms"]
        for c in term["courses"]
    )
    assert attached == issued_file.records["grades"]
    terms = [term["term"] for term in data["terms"]]
    assert terms == sorted(terms)


def test_the_attachment_is_a_pdfa3_associated_file(issued_file):
    reader = PdfReader(io.BytesIO(issued_file.pdf))
    root = reader.trailer["/Root"]

    associated = root["/AF"][0].get_object()
    assert associated["/AFRelationship"] == "/Data"
    assert associated["/EF"]["/F"].get_object()["/Subtype"] == "/application#2Fjson"


def test_no_font_is_left_unembedded(issued_file, tmp_path):
    path = tmp_path / "transcript.pdf"
    path.write_bytes(issued_file.pdf)

    listing = subprocess.run(
        ["pdffonts", str(path)], capture_output=True, text=True, check=True
    ).stdout.splitlines()[2:]

    assert listing, "the file uses fonts"
    for line in listing:
        # name, type, encoding, emb, sub, uni, object, generation
        columns = line.split()
        assert columns[-5] == "yes", line
        assert columns[-4] == "yes", f"embedded as a subset: {line}"
        assert "WenQuanYiMicroHei" in columns[0], line
    assert "Helvetica" not in "\n".join(listing)


def test_title_author_language_xmp_and_output_intent(issued_file):
    reader = PdfReader(io.BytesIO(issued_file.pdf))
    root = reader.trailer["/Root"]

    assert "欧阳娜娜" in reader.metadata.title
    assert "示范大学" in reader.metadata.author
    assert root["/Lang"] == "zh-CN"
    xmp = root["/Metadata"].get_object().get_data().decode("utf-8")
    # pyHanko rewrites the packet when it signs, keeping our properties (as
    # attributes rather than elements: both are valid RDF).
    assert re.search(r"pdfaid:part(>|=\")3", xmp)
    assert re.search(r"pdfaid:conformance(>|=\")B", xmp)
    assert "欧阳娜娜" in xmp
    intent = root["/OutputIntents"][0].get_object()
    assert intent["/S"] == "/GTS_PDFA1"
    assert intent["/DestOutputProfile"].get_object()["/N"] == 3


def test_the_file_is_signed_and_validates(app, issued_file):
    from signing import signing_service

    report = signing_service(app).validate(issued_file.pdf)

    assert report.ok, report


def test_one_changed_byte_breaks_the_signature(app, issued_file):
    from signing import signing_service

    pdf = bytearray(issued_file.pdf)
    position = pdf.index(b"/Lang")
    pdf[position + 7] ^= 0x01

    assert not signing_service(app).validate(bytes(pdf)).ok


def test_pdfsig_sees_the_signature(issued_file, tmp_path):
    path = tmp_path / "transcript.pdf"
    path.write_bytes(issued_file.pdf)

    output = subprocess.run(
        ["pdfsig", str(path)], capture_output=True, text=True
    ).stdout

    assert "Signature is Valid." in output


def test_page_one_renders_as_an_a4_picture(issued_file, tmp_path):
    path = tmp_path / "transcript.pdf"
    path.write_bytes(issued_file.pdf)

    subprocess.run(
        ["pdftoppm", "-r", "40", "-png", "-f", "1", "-l", "1", str(path),
         str(tmp_path / "page")],
        check=True,
    )  # fmt: skip

    png = next(tmp_path.glob("page*.png")).read_bytes()
    assert png.startswith(b"\x89PNG")
    width = int.from_bytes(png[16:20], "big")
    height = int.from_bytes(png[20:24], "big")
    assert abs(height / width - 297 / 210) < 0.01
