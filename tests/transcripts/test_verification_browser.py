"""What an employer reads on the verification pages in Debian's headless Chromium,
at desktop and phone size: a file, a typed code, the QR address, a share link.

Every assertion is on text the page shows (Chinese unless ``?lang=en``), or on the
layout not being wider than the screen.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import io
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

from campus.database import utcnow
from tests.conftest import CHROMIUM_ARGS, PHONE
from transcripts import registry, verification

from .conftest import NOW
from .test_verification import make_link, one_character_wrong

pytestmark = pytest.mark.browser

T = TypeVar("T")

SIZES: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": PHONE,
}


@dataclasses.dataclass
class Employer:
    """One browser tab at one screen size, pointed at the live app."""

    page: Any
    base: str
    width: int

    def open(self, path: str) -> str:
        self.page.goto(self.base + path)
        return self.text()

    def text(self) -> str:
        return str(self.page.inner_text("main"))

    def upload(self, pdf: bytes) -> str:
        """Choose ``pdf`` on the upload form and send it; the answer's text."""
        self.open("/verify")
        self.page.set_input_files(
            "#file",
            files=[
                {"name": "transcript.pdf", "mimeType": "application/pdf", "buffer": pdf}
            ],
        )
        self.page.click("#upload button[type=submit]")
        self.page.wait_for_selector("#verdict")
        return self.verdict()

    def verdict(self) -> str:
        return str(self.page.inner_text("#verdict"))

    def check(self, name: str) -> Any:
        return self.page.locator(f"#checks li[data-check={name}]")

    def fits_the_screen(self) -> bool:
        return bool(
            self.page.evaluate("document.documentElement.scrollWidth") <= self.width
        )


@pytest.fixture(scope="module")
def browser(verification_files):  # type: ignore[no-untyped-def]
    """One Chromium for the module, a fresh context per test: launching is most
    of a short test's time. Made after the session's signed files, because
    signing runs its own event loop and Playwright's must not be running then
    (see ``tests.conftest.chromium``); closed before the next module starts."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def beside_the_browser(work: Callable[[], T]) -> T:
    """Run ``work`` (which signs, and so runs an event loop) in a thread of its
    own, with this test's app context: Playwright's loop counts as running in
    this thread while the module's browser is open."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(contextvars.copy_context().run, work).result()


@pytest.fixture(params=list(SIZES))
def employer(request, browser, live_app):  # type: ignore[no-untyped-def]
    size = SIZES[request.param]
    context = browser.new_context(**size, locale="zh-CN", accept_downloads=True)
    yield Employer(context.new_page(), live_app.url, size["viewport"]["width"])
    context.close()


# -- by file ---------------------------------------------------------------------


def test_a_genuine_transcript_is_authentic(
    employer, register_issued, verification_files
):
    register_issued()

    verdict = employer.upload(verification_files.genuine)

    assert "真实成绩单" in verdict
    assert "有效" in verdict and "欧阳娜娜" in verdict and "示范大学" in verdict
    lines = employer.page.locator("#checks li").all_inner_texts()
    assert len(lines) == 6 and all("通过" in line for line in lines), lines
    assert employer.fits_the_screen()


def test_one_changed_byte_is_refused_saying_what_failed(
    employer, register_issued, verification_files
):
    register_issued()

    verdict = employer.upload(verification_files.one_byte_changed)
    integrity = employer.check("integrity")
    folded = integrity.inner_text()
    integrity.locator("summary").click()

    assert "不可信：文件在签名后被修改" in verdict
    assert "签名后未被修改: 未通过" in folded
    # The technical words are folded away until asked for.
    assert "digest does not match" not in folded
    assert "digest does not match" in integrity.inner_text()
    assert "欧阳娜娜" not in verdict, "nothing is told about a changed file's owner"
    assert employer.fits_the_screen()


def test_a_page_added_by_an_incremental_update_is_refused(
    employer, register_issued, verification_files
):
    issuance = register_issued()

    verdict = employer.upload(verification_files.page_added)

    assert "不可信：签名之后被添加了内容" in verdict
    assert "签名后未被修改: 通过" in employer.check("integrity").inner_text()
    assert "签名覆盖整个文件: 未通过" in employer.check("coverage").inner_text()
    # The signed revision is the registered transcript: its code is given to
    # compare with.
    assert issuance.code in verdict
    assert employer.fits_the_screen()


@pytest.mark.parametrize(
    ("change", "status", "sentence"),
    [
        ("revoke", "已撤销", "撤销该成绩单，原因：成绩更正"),
        ("supersede", "已被取代", "被更新的成绩单取代（成绩更正）"),
    ],
    ids=["revoked", "superseded"],
)
def test_a_withdrawn_transcript_is_authentic_but_says_its_status_plainly(
    employer, session, register_issued, verification_files, change, status, sentence
):
    issuance = register_issued()
    if change == "revoke":
        registry.revoke(session, issuance.id, reason="成绩更正", actor="operator:r")
    else:
        beside_the_browser(
            lambda: registry.supersede(
                session, issuance.id, reason="成绩更正", actor="operator:r", now=NOW
            )
        )
    session.commit()

    verdict = employer.upload(verification_files.genuine)

    assert "真实成绩单" in verdict, "the signature is the university's"
    assert employer.page.inner_text("#status") == status
    assert sentence in verdict
    assert employer.fits_the_screen()


# -- by code, QR address and share link ---------------------------------------------


def test_a_code_with_one_wrong_character_is_caught_by_the_check_character(
    employer, session, register_issued
):
    issuance = register_issued()
    typo = one_character_wrong(issuance.code)

    def look_up(lang: str) -> str:
        employer.open(f"/verify?lang={lang}")
        employer.page.fill("#code", typo)
        employer.page.click("#lookup button[type=submit]")
        employer.page.wait_for_selector("#error")
        return str(employer.page.inner_text("#error"))

    chinese = look_up("zh")
    kept = employer.page.input_value("#code")
    english = look_up("en")

    assert chinese == "验证码有输入错误，请与文件上的验证码核对。"
    assert english == (
        "The code has a typing mistake: please compare it with the document."
    )
    assert kept == typo, "kept to be corrected"
    assert verification.access_log(session, issuance.id) == [], "never looked up"
    assert employer.fits_the_screen()


def printed_address(pdf: bytes) -> str:
    """The verification address printed at the foot of the first page."""
    from pypdf import PdfReader

    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    (address,) = set(re.findall(r"https?://\S+/v/[0-9A-Z-]+", text))
    return address


def test_the_qr_address_shows_the_registered_copy_with_its_status(
    employer, register_issued, issued_file
):
    issuance = register_issued()
    # The file was laid out for another host; the path is what the QR carries.
    path = urlsplit(printed_address(issued_file.pdf)).path

    text = employer.open(path)
    with employer.page.expect_download() as download:
        employer.page.click("#download-copy")

    assert path == f"/v/{issuance.code}"
    assert "登记的成绩单" in text and "有效" in text and "欧阳娜娜" in text
    assert issuance.code in text
    assert employer.page.get_attribute("#view-copy", "href") == (
        f"/v/{issuance.code}/transcript.pdf"
    )
    assert download.value.path().read_bytes() == issued_file.pdf
    assert employer.fits_the_screen()


def test_an_expired_share_link_says_so(employer, session, register_issued):
    issuance = register_issued()
    token = make_link(session, issuance, now=utcnow() - dt.timedelta(days=3), days=1)

    text = employer.open(f"/share/{token}")

    assert "该链接不可用" in text
    assert "该链接已过期，请向毕业生索取新链接。" in text
    assert "欧阳娜娜" not in text
    assert employer.fits_the_screen()
