"""A person's browser is answered with a page, a program with problem details: the
same status, code and words either way, in the language asked for."""

from __future__ import annotations

import pytest

BROWSER = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "zh-CN,zh;q=0.9",
}


def test_a_browser_opening_an_unknown_page_reads_a_chinese_page(client) -> None:
    answer = client.get("/no-such-page", headers=BROWSER)

    assert answer.status_code == 404
    assert answer.mimetype == "text/html"
    page = answer.get_data(as_text=True)
    assert "<h1>未找到</h1>" in page
    assert "not_found" in page
    assert 'href="/"' in page


def test_the_same_page_in_english_when_asked(client) -> None:
    answer = client.get("/no-such-page?lang=en", headers=BROWSER)

    assert answer.status_code == 404
    assert "<h1>Not found</h1>" in answer.get_data(as_text=True)


def test_a_payer_opening_a_stale_checkout_link_reads_why(client) -> None:
    answer = client.get("/pay/o/no-such-order", headers=BROWSER)

    assert (answer.status_code, answer.mimetype) == (404, "text/html")
    assert "收款不存在" in answer.get_data(as_text=True)


def test_a_wrong_method_on_a_page_is_a_page_too(client) -> None:
    answer = client.delete("/verify", headers=BROWSER)

    assert (answer.status_code, answer.mimetype) == (405, "text/html")
    assert "此地址不接受这种请求" in answer.get_data(as_text=True)
    # werkzeug's Allow header goes with the page as with the JSON.
    assert "POST" in answer.headers["Allow"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Accept": "*/*"}, {"Accept": "application/json"}],
    ids=["no accept", "anything", "json"],
)
def test_a_program_still_gets_problem_details(client, headers) -> None:
    answer = client.get("/pay/o/no-such-order", headers=headers)

    assert (answer.status_code, answer.mimetype) == (404, "application/problem+json")
    assert answer.get_json()["code"] == "payment_not_found"


def test_api_paths_answer_json_even_to_a_browser(client) -> None:
    answer = client.get("/api/verify/codes/nonsense", headers=BROWSER)

    assert answer.mimetype == "application/problem+json"


def test_werkzeug_statuses_read_in_our_words(client) -> None:
    answer = client.get("/api/no-such-endpoint", headers={"Accept-Language": "zh"})

    body = answer.get_json()
    assert (answer.status_code, body["code"]) == (404, "not_found")
    assert (body["title"], body["detail"]) == ("未找到", "未找到")


def test_invalid_fields_are_named_and_the_sentence_is_translated(client) -> None:
    answer = client.post(
        "/api/operators/sign-in", json={}, headers={"Accept-Language": "en"}
    )

    body = answer.get_json()
    assert (answer.status_code, body["code"]) == (400, "invalid_input")
    assert body["detail"] == "Some fields are missing or not valid."
    assert "username" in body["errors"]["json"]
