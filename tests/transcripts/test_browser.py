"""The graduate's pages in Debian's headless Chromium at phone size."""

from __future__ import annotations

import pytest

from .conftest import give_grades, make_student

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def server(app):
    from sandbox.core import LoopbackServer

    with LoopbackServer(app) as running:
        yield running


def test_a_graduate_issues_and_shares_on_a_phone(session, server, browser):
    student = make_student(session, name_zh="上官婉儿", name_en="Wan'er Shangguan")
    give_grades(session, student, terms=2)
    session.commit()
    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="zh-CN",
        accept_downloads=True,
    )
    page = context.new_page()

    page.goto(f"{server.url}/sign-in/dev?next=/me/transcripts")
    page.fill("#number", student.number)
    page.click("button[type=submit]")
    page.wait_for_url("**/me/transcripts")
    assert page.locator("h1").inner_text() == "我的成绩单"

    page.click("#issue")
    page.wait_for_selector("#download-current")
    assert "成绩单已签发" in page.inner_text("body")
    with page.expect_download() as download:
        page.click("#download-current")
    assert download.value.suggested_filename.startswith("transcript-")
    pdf = download.value.path().read_bytes()
    assert pdf.startswith(b"%PDF")

    page.click("text=分享给用人单位")
    page.fill("input[name=recipient]", "字节跳动 HR")
    page.fill("input[name=days]", "10")
    page.click("text=生成分享链接")
    link = page.inner_text("#new-link").strip()
    assert "/share/" in link

    employer = context.new_page()
    employer.goto(link)
    assert "上官婉儿" in employer.inner_text("body")

    page.goto(f"{server.url}/me/transcripts")
    page.click("text=访问记录（1）")
    assert "被打开" in page.inner_text(".share-link")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "nothing wider than the phone"

    page.click("text=撤销链接")
    page.wait_for_selector(".share-link .status-revoked")
    employer.goto(link)
    assert "该链接不可用" in employer.inner_text("body")
    context.close()
