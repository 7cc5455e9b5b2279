"""Every operator endpoint refuses whoever may not use it, found by walking the app's
URL map rather than listed by hand: a new operator page that forgets its guard
fails here without anyone having to remember to add a test for it. Every other
endpoint is a terminal's (signed), a signed-in student's, or named below as open
to anyone with the reason: a new endpoint that is none of these fails here too."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from campus.auth import Role, create_operator, needs_student, requires_role
from campus.database import db

# Everything under these is for staff. The sign-in page is the one way in.
OPERATOR_PREFIXES = ("operator", "finance", "registrar", "admin")
PUBLIC = {"/operator/sign-in"}

# Endpoints anyone may call, and why. Everything else needs an operator's role, a
# terminal's signature or a signed-in student.
OPEN_ENDPOINTS = {
    "index": "the home page",
    "static": "style sheets and scripts",
    "health.healthz": "the load balancer's check",
    "openapi.spec": "the API's description",
    "openapi.docs": "the API's description",
    "openapi.swagger_ui_oauth_redirect": "the API's description",
    "auth.operator_sign_in": "the way in for staff",
    "auth.operator_sign_in_api": "the way in for staff",
    "auth.sign_out_api": "signing out needs nobody signed in",
    "auth.student_sign_in": "the way in for students",
    "auth.cas_callback": "CAS hands the student back here with a ticket",
    "auth.dev_sign_in": "development sign-in; refused unless enabled",
    "notifications.wechat": "WeChat Pay's notifications, checked by their signature",
    "notifications.alipay": "Alipay's notifications, checked by their signature",
    "pos_pages.static_qr": "a merchant's printed QR code, opened by any payer",
    "pos_pages.qr_checkout": "an order's QR code, opened by any payer",
    "pos_pages.qr_oauth_return": "the payment app hands the payer back here",
    "transcripts.shared": "a graduate's share link, opened by an employer",
    "transcripts.shared_file": "a graduate's share link, opened by an employer",
    "verification.share_page": "an employer checks a shared transcript",
    "verification.home": "the public verification page",
    "verification.upload_page": "the public verification page",
    "verification.code_form": "the public verification page",
    "verification.code_page": "a verification code, typed by an employer",
    "verification.registered_file": "a verification code, typed by an employer",
    "verification.api_verify_file": "the public verification API",
    "verification.api_code": "the public verification API",
    "verification.api_share": "the public verification API",
}
TERMINAL_BLUEPRINT = "pos_api"
"""Its every request is verified as a terminal's before the view runs."""

# Each wrapper ``requires_role`` makes runs this one code object, so a view is
# guarded when it, or a function it wraps, runs it.
_GUARD = requires_role(Role.ADMIN)(lambda: None).__code__


def allowed_roles(view: Callable[..., Any]) -> tuple[Role, ...] | None:
    """The roles ``requires_role`` lets through to ``view``, or None if unguarded."""
    seen: set[int] = set()
    function: Any = view
    while function is not None and id(function) not in seen:
        seen.add(id(function))
        if getattr(function, "__code__", None) is _GUARD:
            return tuple(inspect.getclosurevars(function).nonlocals["roles"])
        function = getattr(function, "__wrapped__", None)
    return None


def operator_endpoints(app: Any) -> list[tuple[str, Rule, tuple[Role, ...] | None]]:
    """(method, rule, allowed roles) for every operator endpoint of ``app``."""
    endpoints = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        roles = allowed_roles(app.view_functions[rule.endpoint])
        prefixed = rule.rule.split("/")[1] in OPERATOR_PREFIXES
        if rule.rule in PUBLIC or (roles is None and not prefixed):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            endpoints.append((method, rule, roles))
    return endpoints


def _path(rule: Rule) -> str:
    # "1" fits every converter the app uses (string, int, path).
    _, path = rule.build(dict.fromkeys(rule.arguments, "1"), append_unknown=False)
    return path


def _call(client: FlaskClient, method: str, rule: Rule) -> Any:
    # An empty JSON body: the refusal must come before anything reads the request.
    return client.open(_path(rule), method=method, json={} if method != "GET" else None)


def _judge(wrong: dict[tuple[str, str], str]) -> None:
    """Fail naming every endpoint that answered wrongly."""
    assert not wrong, wrong


def test_the_walk_finds_the_operator_areas(app) -> None:
    # A walk that finds nothing would pass everything below.
    paths = {rule.rule for _, rule, _ in operator_endpoints(app)}
    assert {
        "/api/ledger/check",
        "/pos",
        "/reconciliation",
        "/registrar/transcripts",
        "/api/transcripts/imports",
    } <= paths


def test_an_anonymous_caller_is_refused_everywhere(app, client) -> None:
    wrong = {}
    for method, rule, _ in operator_endpoints(app):
        response = _call(client, method, rule)
        if response.status_code not in (401, 403) or (
            response.mimetype != "application/problem+json"
        ):
            wrong[method, rule.rule] = f"{response.status_code} {response.mimetype}"

    _judge(wrong)


@pytest.fixture
def operator_client(app, session) -> Iterator[Callable[[Role], FlaskClient]]:
    """A client signed in as an operator holding only ``role``, one per role."""
    clients: dict[Role, FlaskClient] = {}

    def signed_in(role: Role) -> FlaskClient:
        if role not in clients:
            username = f"only-{role.value}"
            create_operator(session, username, "correct horse battery", [role])
            session.commit()
            client = app.test_client()
            answer = client.post(
                "/api/operators/sign-in",
                json={"username": username, "password": "correct horse battery"},
            )
            assert answer.status_code == 200
            clients[role] = client
        return clients[role]

    yield signed_in
    db.session.remove()


def test_an_operator_without_the_role_is_refused_everywhere(
    app, operator_client
) -> None:
    wrong = {}
    for method, rule, roles in operator_endpoints(app):
        # Admin passes every check; every other role not allowed is tried.
        allowed = set(roles or ())
        for role in [role for role in Role if role not in allowed | {Role.ADMIN}]:
            response = _call(operator_client(role), method, rule)
            code = (response.get_json(silent=True) or {}).get("code")
            if (response.status_code, code) != (403, "forbidden"):
                wrong[method, rule.rule] = (
                    f"{role.value}: {response.status_code} {code}"
                )
                break

    _judge(wrong)


def _who_may_call(app: Any, rule: Rule) -> str:
    view = app.view_functions[rule.endpoint]
    if allowed_roles(view) is not None:
        return "operator"
    if rule.endpoint.split(".")[0] == TERMINAL_BLUEPRINT:
        return "terminal"
    if needs_student(view):
        return "student"
    if rule.endpoint in OPEN_ENDPOINTS:
        return "anyone"
    return "unsaid"


def _endpoints_of(app: Any, caller: str) -> list[tuple[str, Rule]]:
    return [
        (method, rule)
        for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule)
        if _who_may_call(app, rule) == caller
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
    ]


def test_every_endpoint_says_who_may_call_it(app) -> None:
    unsaid = [rule.rule for _, rule in _endpoints_of(app, "unsaid")]
    stale = set(OPEN_ENDPOINTS) - set(app.view_functions)

    assert unsaid == [], "guard these, or add them to OPEN_ENDPOINTS with a reason"
    assert stale == set(), "these open endpoints no longer exist"
    # A walk that finds nothing would pass the two tests below.
    assert len(_endpoints_of(app, "student")) >= 15
    assert len(_endpoints_of(app, "terminal")) >= 5


def test_a_stranger_is_refused_every_students_endpoint(app, client) -> None:
    wrong = {}
    for method, rule in _endpoints_of(app, "student"):
        program = _call(client, method, rule)
        browser = client.open(
            _path(rule), method=method, headers={"Accept": "text/html"}
        )
        code = (program.get_json(silent=True) or {}).get("code")
        location = browser.headers.get("Location", "")
        if (program.status_code, code) != (401, "authentication_required") or (
            browser.status_code != 302 or not location.startswith("/sign-in?next=")
        ):
            wrong[method, rule.rule] = f"{program.status_code} {code}, {location}"

    _judge(wrong)


def test_an_unsigned_request_is_refused_every_terminal_endpoint(app, client) -> None:
    wrong = {}
    for method, rule in _endpoints_of(app, "terminal"):
        response = _call(client, method, rule)
        code = (response.get_json(silent=True) or {}).get("code")
        if (response.status_code, code) != (401, "terminal_signature_refused"):
            wrong[method, rule.rule] = f"{response.status_code} {code}"

    _judge(wrong)


def test_a_stranger_opening_a_staff_page_is_sent_to_the_staff_sign_in(
    app, client
) -> None:
    wrong = {}
    pages = [
        rule
        for method, rule, _ in operator_endpoints(app)
        if method == "GET" and not rule.rule.startswith("/api/")
    ]
    for rule in pages:
        answer = client.get(_path(rule), headers={"Accept": "text/html"})
        location = answer.headers.get("Location", "")
        if answer.status_code != 302 or location != (
            f"/operator/sign-in?next={_path(rule)}"
        ):
            wrong["GET", rule.rule] = f"{answer.status_code} {location}"

    assert len(pages) >= 8
    _judge(wrong)
