"""Every operator endpoint refuses whoever may not use it, found by walking the app's
URL map rather than listed by hand: a new operator page that forgets its guard
fails here without anyone having to remember to add a test for it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from campus.auth import Role, create_operator, requires_role
from campus.database import db

# Everything under these is for staff. The sign-in page is the one way in.
OPERATOR_PREFIXES = ("operator", "finance", "registrar", "admin")
PUBLIC = {"/operator/sign-in"}

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
