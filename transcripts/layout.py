"""The transcript PDF: A4, bilingual, one embedded CJK font, PDF/A-3b intent.

``render(data)`` draws the dictionary of ``transcripts.document`` and returns the
finished, unsigned file. Every page has the security background, the university's
emblem and name, the student's name and number, the verification code and its QR
code, and "第 x 页 / 共 y 页 · Page x of y". The course table flows over pages with
its header repeated and terms as grouped sections.

One font only: WenQuanYi Micro Hei (Apache-2.0, ``transcripts/fonts``), subset and
embedded by reportlab for Chinese and Latin alike. The canvas is told to start in
it, or reportlab would reference an un-embedded Helvetica on every page.

After reportlab, ``pdfa`` adds what reportlab cannot: XMP metadata declaring
PDF/A-3b, an sRGB output intent, the document language, and the data attached as
``transcript.json`` (an associated file, ``AFRelationship /Data``). PDF/A-3 and
not PDF/A-2: only part 3 allows a non-PDF attachment. What is and is not checked
is in ``docs/transcripts.md``.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import logging
import math
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import qrcode
from qrcode.constants import ERROR_CORRECT_M
from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER, TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Frame,
    KeepTogether,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from transcripts import pdfa

logger = logging.getLogger(__name__)

FONT = "WenQuanYiMicroHei"
FONT_PATH = Path(__file__).resolve().parent / "fonts" / "wqy-microhei.ttf"

INK = colors.HexColor("#1d2430")
NAVY = colors.HexColor("#1f3a68")
MUTED = colors.HexColor("#5b6574")
RULE = colors.HexColor("#9aa6b8")
TERM_FILL = colors.HexColor("#e8edf5")
GUILLOCHE = colors.HexColor("#d5e3ef")
MICROTEXT = colors.HexColor("#c9d6e4")
PALE_EMBLEM = colors.HexColor("#edf1f7")

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 16 * mm
HEADER_HEIGHT = 34 * mm
FOOTER_HEIGHT = 30 * mm
QR_SIZE = 22 * mm

CATEGORY = {
    "required": ("必修", "Req."),
    "elective": ("选修", "Elec."),
    "general": ("通识", "Gen."),
    "practice": ("实践", "Prac."),
}
EXAM_NOTE = {"makeup": ("补考", "Make-up"), "retake": ("重修", "Retake")}
GENDER = {"male": ("男", "Male"), "female": ("女", "Female"), "unstated": ("—", "—")}
PROGRAMME = {
    "undergraduate": ("本科", "Undergraduate"),
    "master": ("硕士研究生", "Master's"),
    "doctorate": ("博士研究生", "Doctoral"),
}
STATUS = {
    "enrolled": ("在读", "Enrolled"),
    "graduated": ("已毕业", "Graduated"),
    "suspended": ("休学", "Suspended"),
    "withdrawn": ("退学", "Withdrawn"),
}
CHINA = ZoneInfo("Asia/Shanghai")


@functools.cache
def register_font() -> str:
    """Load the font once per process (parsing 4.6 MB costs ~0.2 s)."""
    # Binary streams stay binary: ASCII85 would make them a quarter larger and,
    # without reportlab's C accelerator, costs a tenth of a second per file.
    rl_config.useA85 = 0
    pdfmetrics.registerFont(TTFont(FONT, str(FONT_PATH)))
    return FONT


def _style(name: str, size: float, **options: Any) -> ParagraphStyle:
    return ParagraphStyle(
        name,
        fontName=FONT,
        fontSize=size,
        leading=options.pop("leading", size * 1.3),
        textColor=options.pop("textColor", INK),
        wordWrap="CJK",
        **options,
    )


STYLES = {
    "cell": _style("cell", 7.6),
    "cell_en": _style("cell_en", 6.4, textColor=MUTED, leading=7.6),
    "label": _style("label", 7.2, textColor=MUTED),
    "value": _style("value", 8.6),
    "term": _style("term", 7.8, textColor=NAVY),
    "heading": _style("heading", 10, textColor=NAVY, spaceBefore=6, spaceAfter=3),
    "body": _style("body", 8.2, leading=11.5),
    "small": _style("small", 6.8, textColor=MUTED, leading=9),
    "title": _style("title", 15, alignment=TA_CENTER, textColor=NAVY),
    "title_en": _style("title_en", 9.5, alignment=TA_CENTER, textColor=NAVY),
    "left": _style("left", 8, alignment=TA_LEFT),
}


def _esc(text: object) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _bi(zh: str, en: str, style: str = "cell", en_style: str = "cell_en") -> list:
    return [Paragraph(_esc(zh), STYLES[style]), Paragraph(_esc(en), STYLES[en_style])]


def term_label(term: str) -> tuple[str, str]:
    first, second, number = term.split("-")
    return (
        f"{first}—{second} 学年 第 {number} 学期",
        f"Academic year {first}–{second}, term {number}",
    )


def _local_date(iso: str) -> dt.date:
    return dt.datetime.fromisoformat(iso).astimezone(CHINA).date()


# -- drawing on every page -------------------------------------------------------------


def draw_emblem(
    canvas: Canvas,
    x: float,
    y: float,
    radius: float,
    data: dict,
    color: colors.Color = NAVY,
) -> None:
    """The university's emblem: a double ring with the name around it, an open
    book under a five-pointed star in the middle, and the founding year."""
    canvas.saveState()
    canvas.translate(x, y)
    canvas.setStrokeColor(color)
    canvas.setFillColor(color)
    canvas.setLineWidth(radius * 0.05)
    canvas.circle(0, 0, radius, stroke=1, fill=0)
    canvas.setLineWidth(radius * 0.02)
    canvas.circle(0, 0, radius * 0.86, stroke=1, fill=0)
    canvas.circle(0, 0, radius * 0.58, stroke=1, fill=0)

    # The name around the ring: Chinese along the top, English along the bottom.
    ring = radius * 0.72
    name_zh = data["university"]["name_zh"]
    size_zh = radius * 0.2
    spread = math.radians(26) * max(len(name_zh) - 1, 1) / 3
    for index, char in enumerate(name_zh):
        angle = math.pi / 2 + spread / 2 - index * spread / max(len(name_zh) - 1, 1)
        _glyph_on_ring(canvas, char, angle, ring, size_zh, outward=True)
    name_en = data["university"]["name_en"].upper()
    size_en = radius * 0.11
    spread = min(math.radians(170), len(name_en) * math.radians(8.4))
    for index, char in enumerate(name_en):
        angle = -math.pi / 2 - spread / 2 + index * spread / max(len(name_en) - 1, 1)
        _glyph_on_ring(canvas, char, angle, ring, size_en, outward=False)

    # The star.
    star = radius * 0.17
    path = canvas.beginPath()
    for point in range(10):
        r = star if point % 2 == 0 else star * 0.4
        a = math.pi / 2 + point * math.pi / 5
        px, py = r * math.cos(a), radius * 0.22 + r * math.sin(a)
        if point == 0:
            path.moveTo(px, py)
        else:
            path.lineTo(px, py)
    path.close()
    canvas.drawPath(path, stroke=0, fill=1)

    # The open book: two pages curving away from the spine.
    canvas.setLineWidth(radius * 0.03)
    for side in (-1, 1):
        page = canvas.beginPath()
        page.moveTo(0, -radius * 0.28)
        page.curveTo(
            side * radius * 0.15, -radius * 0.2,
            side * radius * 0.3, -radius * 0.2,
            side * radius * 0.4, -radius * 0.26,
        )  # fmt: skip
        page.lineTo(side * radius * 0.4, -radius * 0.02)
        page.curveTo(
            side * radius * 0.3, radius * 0.04,
            side * radius * 0.15, radius * 0.04,
            0, -radius * 0.04,
        )  # fmt: skip
        page.close()
        canvas.drawPath(page, stroke=1, fill=0)
    canvas.setFont(FONT, radius * 0.13)
    canvas.drawCentredString(0, -radius * 0.47, "1952")
    canvas.restoreState()


def _glyph_on_ring(
    canvas: Canvas, char: str, angle: float, ring: float, size: float, outward: bool
) -> None:
    canvas.saveState()
    canvas.translate(ring * math.cos(angle), ring * math.sin(angle))
    canvas.rotate(math.degrees(angle) + (-90 if outward else 90))
    canvas.setFont(FONT, size)
    canvas.drawCentredString(0, -size * 0.35, char)
    canvas.restoreState()


def draw_security_background(canvas: Canvas, data: dict) -> None:
    """Fine guilloche bands, a line of microtext and a pale emblem: hard to
    reproduce on a copier, invisible to the reader's eye at normal distance."""
    canvas.saveState()
    canvas.setStrokeColor(GUILLOCHE)
    canvas.setLineWidth(0.25)
    for band, base in enumerate((PAGE_HEIGHT * 0.72, PAGE_HEIGHT * 0.38)):
        for strand in range(14):
            phase = strand * math.pi / 7
            path = canvas.beginPath()
            for step in range(0, 161):
                x = PAGE_WIDTH * step / 160
                y = base + 18 * math.sin(x / 37 + phase) * math.cos(
                    x / 113 + band + phase / 3
                )
                if step == 0:
                    path.moveTo(x, y)
                else:
                    path.lineTo(x, y)
            canvas.drawPath(path, stroke=1, fill=0)
    canvas.setFillColor(MICROTEXT)
    canvas.setFont(FONT, 2.6)
    line = (
        f"{data['university']['name_zh']} {data['university']['name_en'].upper()} "
        f"{data['issuance']['verification_code']} "
    )
    for y in (MARGIN + FOOTER_HEIGHT - 3 * mm, PAGE_HEIGHT - MARGIN - HEADER_HEIGHT):
        canvas.drawString(MARGIN, y, (line * 12)[:420])
    canvas.restoreState()
    # A large pale emblem behind the table.
    draw_emblem(canvas, PAGE_WIDTH / 2, PAGE_HEIGHT * 0.47, 62 * mm, data, PALE_EMBLEM)


def draw_qr(canvas: Canvas, url: str, x: float, y: float, size: float) -> None:
    """The QR code as vector squares (crisp at any zoom, no image to embed),
    error correction M."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=0)
    code.add_data(url)
    code.make(fit=True)
    matrix = code.get_matrix()
    cells = len(matrix)
    cell = size / cells
    canvas.saveState()
    canvas.setFillColor(colors.black)
    for row_index, row in enumerate(matrix):
        column = 0
        while column < cells:
            if not row[column]:
                column += 1
                continue
            start = column
            while column < cells and row[column]:
                column += 1
            canvas.rect(
                x + start * cell,
                y + size - (row_index + 1) * cell,
                (column - start) * cell,
                cell,
                stroke=0,
                fill=1,
            )
    canvas.restoreState()


def _draw_page(canvas: Canvas, doc: TranscriptDocTemplate) -> None:
    data = doc.data
    # The background and the QR code are the same on every page: drawn once as
    # form XObjects and referenced, which keeps the file small and fast to make.
    if not doc.forms_drawn:
        canvas.beginForm("background")
        draw_security_background(canvas, data)
        canvas.endForm()
        canvas.beginForm("qr")
        draw_qr(canvas, data["issuance"]["verify_url"], 0, 0, QR_SIZE)
        canvas.endForm()
        doc.forms_drawn = True
    canvas.doForm("background")
    top = PAGE_HEIGHT - MARGIN
    draw_emblem(canvas, MARGIN + 12 * mm, top - 12 * mm, 12 * mm, data)

    canvas.setFillColor(NAVY)
    canvas.setFont(FONT, 16)
    canvas.drawString(MARGIN + 28 * mm, top - 8 * mm, data["university"]["name_zh"])
    canvas.setFont(FONT, 9)
    canvas.drawString(MARGIN + 28 * mm, top - 13 * mm, data["university"]["name_en"])
    canvas.setFont(FONT, 14)
    canvas.drawRightString(PAGE_WIDTH - MARGIN, top - 8 * mm, "学业成绩单")
    canvas.setFont(FONT, 9)
    canvas.drawRightString(PAGE_WIDTH - MARGIN, top - 13 * mm, "Academic Transcript")

    student = data["student"]
    canvas.setFillColor(INK)
    canvas.setFont(FONT, 8)
    canvas.drawString(
        MARGIN + 28 * mm,
        top - 20 * mm,
        f"{student['name_zh']}  {student['name_en']}   "
        f"学号 Student No. {student['number']}",
    )
    canvas.setStrokeColor(NAVY)
    canvas.setLineWidth(0.8)
    canvas.line(MARGIN, top - 26 * mm, PAGE_WIDTH - MARGIN, top - 26 * mm)

    # Footer: code and QR on the right, issuer and page number on the left.
    issuance = data["issuance"]
    bottom = MARGIN
    canvas.setLineWidth(0.4)
    canvas.line(
        MARGIN,
        bottom + QR_SIZE + 3 * mm,
        PAGE_WIDTH - MARGIN,
        bottom + QR_SIZE + 3 * mm,
    )
    canvas.saveState()
    canvas.translate(PAGE_WIDTH - MARGIN - QR_SIZE, bottom)
    canvas.doForm("qr")
    canvas.restoreState()
    canvas.setFont(FONT, 7)
    canvas.setFillColor(MUTED)
    right = PAGE_WIDTH - MARGIN - QR_SIZE - 3 * mm
    canvas.drawRightString(right, bottom + QR_SIZE - 3 * mm, "验证码 Verification code")
    canvas.setFillColor(INK)
    canvas.setFont(FONT, 10)
    canvas.drawRightString(
        right, bottom + QR_SIZE - 8 * mm, issuance["verification_code"]
    )
    canvas.setFont(FONT, 6.5)
    canvas.setFillColor(MUTED)
    canvas.drawRightString(right, bottom + QR_SIZE - 12 * mm, issuance["verify_url"])
    canvas.drawRightString(
        right,
        bottom + QR_SIZE - 15.5 * mm,
        "扫码或访问上述地址核验 · Scan or visit to verify",
    )
    canvas.drawString(
        MARGIN,
        bottom + QR_SIZE - 3 * mm,
        f"{data['university']['issuer_zh']} {data['university']['issuer_en']}",
    )
    canvas.drawString(
        MARGIN,
        bottom + QR_SIZE - 6.5 * mm,
        f"签发 Issued {_local_date(issuance['issued_at']).isoformat()} · "
        f"有效期至 Valid until {_local_date(issuance['valid_until']).isoformat()}",
    )
    canvas.drawString(MARGIN, bottom + 1 * mm, f"layout {data['layout_version']}")


class NumberedCanvas(Canvas):
    """Holds each page until the document is complete, then writes "第 x 页 /
    共 y 页 · Page x of y" on every one: the total is only known at the end."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["initialFontName"] = FONT
        kwargs["initialFontSize"] = 8
        super().__init__(*args, **kwargs)
        self._pages: list[dict[str, Any]] = []

    def showPage(self) -> None:  # noqa: N802 - reportlab's name
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._pages)
        for number, state in enumerate(self._pages, start=1):
            self.__dict__.update(state)
            self.setFont(FONT, 7.5)
            self.setFillColor(INK)
            self.drawString(
                MARGIN,
                MARGIN + QR_SIZE - 11 * mm,
                f"第 {number} 页 / 共 {total} 页 · Page {number} of {total}",
            )
            super().showPage()
        super().save()


class TranscriptDocTemplate(BaseDocTemplate):
    def __init__(self, buffer: io.BytesIO, data: dict[str, Any]) -> None:
        self.data = data
        self.forms_drawn = False
        student = data["student"]
        super().__init__(
            buffer,
            pagesize=A4,
            leftMargin=MARGIN,
            rightMargin=MARGIN,
            topMargin=MARGIN + HEADER_HEIGHT - 6 * mm,
            bottomMargin=MARGIN + FOOTER_HEIGHT,
            title=f"学业成绩单 Academic Transcript — {student['name_zh']} "
            f"{student['name_en']} ({student['number']})",
            author=f"{data['university']['name_zh']} {data['university']['issuer_zh']}"
            f" / {data['university']['name_en']}, {data['university']['issuer_en']}",
            subject="Academic transcript 学业成绩单",
            creator="campus-card transcripts",
            lang="zh-CN",
            initialFontName=FONT,
            initialFontSize=8,
            pageCompression=1,
        )
        frame = Frame(
            self.leftMargin,
            self.bottomMargin,
            self.width,
            self.height,
            id="body",
            leftPadding=0,
            rightPadding=0,
        )
        self.addPageTemplates([PageTemplate("page", [frame], onPage=_draw_page)])


# -- the flowing content ---------------------------------------------------------------


def _student_block(data: dict[str, Any]) -> Table:
    student = data["student"]
    gender = GENDER[student["gender"]]
    programme = PROGRAMME[student["programme"]]
    status = STATUS[student["status"]]

    def pair(zh: str, en: str, value_zh: str, value_en: str = "") -> list:
        value = _esc(value_zh) + (
            f" <font size=7 color='#5b6574'>{_esc(value_en)}</font>"
            if value_en and value_en != value_zh
            else ""
        )
        return [
            Paragraph(f"{zh}<br/>{en}", STYLES["label"]),
            Paragraph(value, STYLES["value"]),
        ]

    rows = [
        pair("姓名", "Name", student["name_zh"], student["name_en"])
        + pair("学号", "Student No.", student["number"]),
        pair("性别", "Gender", *gender)
        + pair("出生日期", "Date of birth", student["birth_date"] or "—"),
        pair("学院", "College", student["college_zh"], student["college_en"])
        + pair("专业", "Major", student["major_zh"], student["major_en"]),
        pair("培养层次", "Programme", *programme) + pair("学籍状态", "Status", *status),
        pair("入学日期", "Enrolled", student["enrolled_on"])
        + pair("毕业日期", "Graduated", student["graduated_on"] or "—"),
    ]
    width = PAGE_WIDTH - 2 * MARGIN
    table = Table(
        rows, colWidths=[width * 0.13, width * 0.37, width * 0.13, width * 0.37]
    )
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), FONT, 8),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, RULE),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    return table


COLUMNS = [
    ("课程代码", "Code", 0.12),
    ("课程名称", "Course title", 0.44),
    ("性质", "Type", 0.08),
    ("学分", "Credits", 0.08),
    ("成绩", "Mark", 0.09),
    ("绩点", "GP", 0.08),
    ("备注", "Note", 0.11),
]


def _course_table(data: dict[str, Any]) -> Table:
    width = PAGE_WIDTH - 2 * MARGIN
    header = [
        [Paragraph(zh, STYLES["cell"]), Paragraph(en, STYLES["cell_en"])]
        for zh, en, _ in COLUMNS
    ]
    rows: list[list[Any]] = [header]
    style: list[tuple[Any, ...]] = [
        ("FONT", (0, 0), (-1, -1), FONT, 7.6),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#d7e0ee")),
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, NAVY),
        ("LINEBELOW", (0, 1), (-1, -1), 0.2, RULE),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.6),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.6),
        ("ALIGN", (3, 1), (5, -1), "RIGHT"),
    ]
    for term in data["terms"]:
        zh, en = term_label(term["term"])
        credits = sum(
            (
                Decimal(course["credits"])
                for course in term["courses"]
                if course["passed"]
            ),
            Decimal(0),
        )
        rows.append(
            [
                Paragraph(
                    f"{_esc(zh)} · {_esc(en)} "
                    f"<font color='#5b6574'>（获得学分 credits earned "
                    f"{format(credits.normalize(), 'f')}）</font>",
                    STYLES["term"],
                )
            ]
            + [""] * (len(COLUMNS) - 1)
        )
        index = len(rows) - 1
        style += [
            ("SPAN", (0, index), (-1, index)),
            ("BACKGROUND", (0, index), (-1, index), TERM_FILL),
            # A term's heading never ends a page: it moves with its first course.
            ("NOSPLIT", (0, index), (-1, index + 1)),
        ]
        for course in term["courses"]:
            category = CATEGORY[course["category"]]
            note = EXAM_NOTE.get(course["exam_kind"])
            notes = []
            if note:
                notes.append(f"{note[0]} {note[1]}")
            if not course["passed"]:
                notes.append("未通过 Failed")
            if not course["counted_in_gpa"] and course["grade_points"] is not None:
                notes.append("不计入 Not in GPA")
            rows.append(
                [
                    Paragraph(_esc(course["code"]), STYLES["cell"]),
                    _bi(course["name_zh"], course["name_en"]),
                    _bi(*category),
                    course["credits"],
                    Paragraph(_esc(course["mark"]), STYLES["cell"]),
                    course["grade_points"] or "—",
                    Paragraph("<br/>".join(_esc(n) for n in notes), STYLES["cell_en"]),
                ]
            )
    table = Table(
        rows,
        colWidths=[width * fraction for _, _, fraction in COLUMNS],
        repeatRows=1,
    )
    table.setStyle(TableStyle(style))
    return table


def _totals(data: dict[str, Any]) -> list[Any]:
    totals = data["totals"]
    by_category = totals["earned_by_category"]
    width = PAGE_WIDTH - 2 * MARGIN
    scale = totals["gpa_scale"]
    policy = {
        "highest": ("重修取最高", "best attempt counts"),
        "latest": ("重修取最后一次", "latest attempt counts"),
        "all": ("所有修读均计入", "every attempt counts"),
    }[totals["retake_policy"]]

    def cell(zh: str, en: str, value: str) -> list:
        return [
            Paragraph(f"{zh}<br/>{en}", STYLES["label"]),
            Paragraph(_esc(value), STYLES["value"]),
        ]

    rows = [
        cell("获得总学分", "Credits earned", totals["earned_credits"])
        + cell(
            "平均学分绩点",
            "GPA",
            f"{totals['gpa']} / {totals['gpa_scale_maximum']}",
        ),
        cell(
            "必修 / 选修",
            "Required / elective",
            f"{by_category['required']} / {by_category['elective']}",
        )
        + cell(
            "加权平均分",
            "Weighted average mark",
            totals["weighted_average"] or "—",
        ),
        cell(
            "通识 / 实践",
            "General / practice",
            f"{by_category['general']} / {by_category['practice']}",
        )
        + cell("绩点计算", "GPA basis", f"{scale}; {policy[0]} {policy[1]}"),
    ]
    table = Table(
        rows, colWidths=[width * 0.16, width * 0.34, width * 0.16, width * 0.34]
    )
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), FONT, 8),
                ("BOX", (0, 0), (-1, -1), 0.6, NAVY),
                ("LINEBELOW", (0, 0), (-1, -2), 0.2, RULE),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ]
        )
    )
    student = data["student"]
    degree = (
        f"授予 {student['degree_zh']}。 Degree conferred: {student['degree_en']}."
        if student["degree_zh"]
        else "未授予学位。 No degree conferred."
    )
    graduation = (
        f"{student['graduated_on']} 毕业。 Graduated on {student['graduated_on']}."
        if student["graduated_on"]
        else "尚未毕业。 Not yet graduated."
    )
    issuance = data["issuance"]
    statement = (
        f"{degree} {graduation}<br/>"
        f"本成绩单由{_esc(data['university']['name_zh'])}"
        f"{_esc(data['university']['issuer_zh'])}以电子签名签发，"
        f"签发日期 {_local_date(issuance['issued_at']).isoformat()}，"
        f"有效期至 {_local_date(issuance['valid_until']).isoformat()}。"
        "打印件须凭验证码在线核验。<br/>"
        f"This transcript is issued and electronically signed by the "
        f"{_esc(data['university']['issuer_en'])}, "
        f"{_esc(data['university']['name_en'])}, on "
        f"{_local_date(issuance['issued_at']).isoformat()} and is valid until "
        f"{_local_date(issuance['valid_until']).isoformat()}. A printed copy is "
        "authentic only when its verification code checks out online. The "
        "machine-readable data is attached as transcript.json."
    )
    return [
        Spacer(1, 4 * mm),
        KeepTogether(
            [
                Paragraph(
                    "合计与学位 · Totals, degree and graduation", STYLES["heading"]
                ),
                table,
                Spacer(1, 3 * mm),
                Paragraph(statement, STYLES["body"]),
            ]
        ),
    ]


def render_unsigned(data: dict[str, Any]) -> bytes:
    """reportlab's PDF, before the PDF/A additions."""
    register_font()
    buffer = io.BytesIO()
    doc = TranscriptDocTemplate(buffer, data)
    story: list[Any] = [
        Paragraph("学业成绩单", STYLES["title"]),
        Paragraph("ACADEMIC TRANSCRIPT", STYLES["title_en"]),
        Spacer(1, 3 * mm),
        _student_block(data),
        Spacer(1, 4 * mm),
        Paragraph("课程成绩 · Courses and marks", STYLES["heading"]),
        _course_table(data),
        *_totals(data),
    ]
    doc.build(story, canvasmaker=NumberedCanvas)
    return buffer.getvalue()


def render(data: dict[str, Any], attachment: bytes) -> bytes:
    """The complete, unsigned transcript: reportlab's drawing plus PDF/A
    metadata, output intent and the attached ``transcript.json``."""
    student = data["student"]
    issued_at = dt.datetime.fromisoformat(data["issuance"]["issued_at"])
    return pdfa.finish(
        render_unsigned(data),
        title=f"学业成绩单 Academic Transcript — {student['name_zh']} "
        f"{student['name_en']} ({student['number']})",
        author=f"{data['university']['name_zh']}{data['university']['issuer_zh']} "
        f"{data['university']['name_en']}, {data['university']['issuer_en']}",
        subject="学业成绩单 Academic transcript",
        language="zh-CN",
        moment=issued_at,
        attachment=attachment,
        attachment_name="transcript.json",
        attachment_description="Transcript data, schema transcript-v1",
    )
