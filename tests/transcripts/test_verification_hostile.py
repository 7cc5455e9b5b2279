"""What a guesser, a fuzzer or a hostile file gets from verification: limits, clean
problems, a killed check, and never a server error."""

from __future__ import annotations

import dataclasses
import io
import time
import zlib

import pytest

from signing.workers import OutOfTime, ValidationWorkers, WorkerFailed
from transcripts import codes, verification

from .conftest import pdf_form


def post_file(client, pdf: bytes):
    return client.post("/api/verify?lang=en", **pdf_form(pdf))


# -- rate limits ---------------------------------------------------------------------


def test_thirty_wrong_codes_in_a_minute_are_rate_limited(client, register_issued):
    issuance = register_issued()
    guesses = [codes.new_code() for _ in range(30)]

    answers = [
        client.get(f"/api/verify/codes/{guess}").status_code for guess in guesses
    ]
    refused = client.get(f"/api/verify/codes/{issuance.code}")
    page = client.get(f"/v/{issuance.code}")
    elsewhere = client.get(
        f"/api/verify/codes/{issuance.code}", environ_base={"REMOTE_ADDR": "10.9.8.7"}
    )

    wrong_limit = 20  # the default CAMPUS_VERIFICATION_WRONG_CODE_LIMIT per minute
    assert answers[:wrong_limit] == [404] * wrong_limit
    assert answers[wrong_limit:] == [429] * (30 - wrong_limit)
    assert refused.status_code == 429, "a guesser does not get a real code answered"
    assert refused.get_json()["code"] == "rate_limited"
    assert page.status_code == 429 and "请等待一分钟" in page.get_data(as_text=True)
    assert elsewhere.status_code == 200, "the limit is per client address"


def test_mistyped_codes_count_against_the_same_limit(client):
    typo = codes.new_code()
    typo = ("1" if typo[0] != "1" else "2") + typo[1:]

    statuses = [client.get(f"/v?code={typo}").status_code for _ in range(21)]

    assert statuses == [400] * 20 + [429]


def test_uploads_are_rate_limited_per_client(app, client, verification_files):
    service = verification.verification_service(app)
    service.config = dataclasses.replace(service.config, upload_limit="3 per minute")

    statuses = [
        post_file(client, verification_files.unsigned).status_code for _ in range(4)
    ]

    assert statuses == [200, 200, 200, 429]


# -- hostile and broken files ---------------------------------------------------------


def pdf_of(objects: list[bytes]) -> bytes:
    """A syntactically complete PDF with a cross-reference table; object 1 is
    the catalogue."""
    body = io.BytesIO()
    body.write(b"%PDF-1.7\n")
    offsets = []
    for number, content in enumerate(objects, 1):
        offsets.append(body.tell())
        body.write(b"%d 0 obj\n%s\nendobj\n" % (number, content))
    xref = body.tell()
    body.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        body.write(b"%010d 00000 n \n" % offset)
    body.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
        % (len(objects) + 1, xref)
    )
    return body.getvalue()


CATALOGUE = b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields 3 0 R >> >>"
PAGES = b"<< /Type /Pages /Kids [] /Count 0 >>"


def huge_object_count() -> bytes:
    return pdf_of([b"[%d]" % n for n in range(1, 100_001)])


def deep_arrays() -> bytes:
    return pdf_of([CATALOGUE, PAGES, b"[" * 50_000 + b"]" * 50_000])


def deep_dictionaries() -> bytes:
    nested = b"<< /A " * 30_000 + b"1" + b" >>" * 30_000
    return pdf_of([CATALOGUE, PAGES, b"[" + nested + b"]"])


def decompression_bomb() -> bytes:
    bomb = zlib.compress(b"\0" * (200 * 1024 * 1024), 9)
    stream = b"<< /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream" % (
        len(bomb),
        bomb,
    )
    return pdf_of([CATALOGUE, PAGES, stream])


def cyclic_form_tree() -> bytes:
    return pdf_of(
        [CATALOGUE, PAGES, b"[4 0 R]", b"<< /FT /Sig /T (s) /Kids [4 0 R] >>"]
    )


def many_forged_signatures() -> bytes:
    count = 20_000
    fields = b"[" + b" ".join(b"%d 0 R" % n for n in range(4, count + 4)) + b"]"
    forged = (
        b"<< /FT /Sig /T (s%d) /V << /Type /Sig /Filter /Adobe.PPKLite /SubFilter "
        b"/ETSI.CAdES.detached /ByteRange [0 1 2 3] /Contents <00> >> >>"
    )
    return pdf_of([CATALOGUE, PAGES, fields] + [forged % n for n in range(count)])


def garbled_signature(genuine: bytes) -> bytes:
    """The signature's own bytes (outside the signed range) overwritten."""
    start = genuine.index(b"/Contents <") + len(b"/Contents <") + 40
    return genuine[:start] + b"0" * 400 + genuine[start + 400 :]


CORPUS = {
    "truncated": ("not_a_pdf", lambda g: g[: len(g) // 2]),
    "garbage": (
        "not_a_pdf",
        lambda g: b"%PDF-1.7\n" + bytes(range(256)) * 64 + b"%%EOF\n",
    ),  # fmt: skip
    "a picture": ("not_a_pdf", lambda g: b"\x89PNG\r\n\x1a\n" + bytes(2048)),
    "empty": ("not_a_pdf", lambda g: b""),
    "huge object count": ("not_a_pdf", lambda g: huge_object_count()),
    "deeply nested arrays": ("not_a_pdf", lambda g: deep_arrays()),
    "deeply nested dictionaries": ("not_a_pdf", lambda g: deep_dictionaries()),
    "cyclic form tree": ("not_a_pdf", lambda g: cyclic_form_tree()),
    "twenty thousand forged signatures": (
        "not_a_pdf",
        lambda g: many_forged_signatures(),
    ),
    "decompression bomb": ("unsigned", lambda g: decompression_bomb()),
    # The structure reads, the signature's own data does not.
    "garbled signature bytes": ("not_a_pdf", garbled_signature),
    "too large": ("too_large", lambda g: b"%PDF-1.7\n" + bytes(11 * 1024 * 1024)),
}


@pytest.mark.parametrize("case", list(CORPUS), ids=list(CORPUS))
def test_a_malformed_pdf_gets_a_clean_answer_within_the_deadline(
    app, client, verification_files, case
):
    expected, make = CORPUS[case]
    hostile = make(verification_files.genuine)
    service = verification.verification_service(app)
    # A child's first file may also wait for its start-up; the bound is the
    # deadline of a check, so the children are started first.
    service.workers.warm()

    started = time.monotonic()
    response = post_file(client, hostile)
    elapsed = time.monotonic() - started

    # The bound, not a speed: CAMPUS_VERIFICATION_SECONDS, whatever it is set to,
    # with room for the request's own reading of the upload on a loaded machine.
    assert elapsed <= service.config.seconds + 5, (
        f"answered after {elapsed:.1f} s, the deadline is {service.config.seconds} s"
    )
    body = response.get_json()
    assert response.status_code < 500
    answered = body.get("outcome") or body.get("code")
    assert answered == expected, body
    if response.status_code >= 400:
        assert response.mimetype == "application/problem+json"
        assert body["detail"]


def test_a_page_upload_of_a_broken_file_says_not_a_valid_pdf(client):
    response = client.post(
        "/verify", data={"file": (io.BytesIO(b"%PDF-1.4\nnonsense"), "a.pdf")}
    )

    assert response.status_code == 400
    assert "不是本服务能读取的 PDF 文件" in response.get_data(as_text=True)


def test_a_check_that_overruns_its_deadline_is_stopped(app, client, verification_files):
    service = verification.verification_service(app)
    recipe = service.workers.recipe
    workers = ValidationWorkers(recipe, count=1, seconds=0.001)
    workers.warm()
    (child,) = workers._free.queue
    service._workers = workers

    try:
        response = post_file(client, verification_files.genuine)
        killed = not child.process.is_alive()
        # The next file gets a fresh child (allowed its start-up time) and an
        # answer.
        report = workers.validate(verification_files.genuine)
        with pytest.raises(OutOfTime):
            workers.validate(verification_files.genuine)
    finally:
        workers.close()

    assert response.status_code == 422
    assert response.get_json()["code"] == "verification_timeout"
    assert killed
    assert report.ok


def test_a_child_that_dies_is_replaced(app, verification_files):
    recipe = verification.verification_service(app).workers.recipe
    workers = ValidationWorkers(recipe, count=1, seconds=30)
    workers.warm()
    (child,) = workers._free.queue
    child.process.kill()
    child.process.join()

    try:
        with pytest.raises(WorkerFailed):
            workers.validate(verification_files.genuine)
        report = workers.validate(verification_files.genuine)
    finally:
        workers.close()

    assert report.ok


# -- fuzzing the API ------------------------------------------------------------------


def test_schemathesis_finds_no_server_error_in_the_verification_api(app):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings

    service = verification.verification_service(app)
    service.config = dataclasses.replace(
        service.config,
        code_limit="10000 per minute",
        wrong_code_limit="10000 per minute",
        upload_limit="10000 per minute",
    )
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app).include(
        path_regex="^/api/verify"
    )
    server_errors: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]

    for operation in operations:

        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def call(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call()
            if response.status_code >= 500:
                server_errors.append(f"{case.method} {case.formatted_path}")

        call()

    assert len(operations) == 5
    assert server_errors == []
