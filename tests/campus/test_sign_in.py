"""Students sign in through CAS (a loopback CAS server speaking CAS 3.0) or, in
development only, through the labelled development sign-in."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask, redirect, request

from campus import create_app
from campus.people import Person, PersonKind
from sandbox.core import LoopbackServer


def cas_server() -> tuple[Flask, dict[str, tuple[str, str]]]:
    """A CAS 3.0 server whose users all sign in successfully as the ``user``
    parameter; tickets are one-use and bound to their service."""
    tickets: dict[str, tuple[str, str]] = {}
    cas = Flask("cas")

    @cas.get("/cas/login")
    def login():
        ticket = "ST-" + secrets.token_hex(8)
        tickets[ticket] = (request.args["user"], request.args["service"])
        separator = "&" if "?" in request.args["service"] else "?"
        return redirect(f"{request.args['service']}{separator}ticket={ticket}")

    @cas.get("/cas/p3/serviceValidate")
    def validate():
        user, service = tickets.pop(request.args["ticket"], (None, None))
        if user is None or service != request.args["service"]:
            return (
                '<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas">'
                '<cas:authenticationFailure code="INVALID_TICKET">no'
                "</cas:authenticationFailure>"
                "</cas:serviceResponse>"
            )
        return (
            '<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas">'
            f"<cas:authenticationSuccess><cas:user>{user}</cas:user>"
            "<cas:attributes><cas:displayName>x</cas:displayName></cas:attributes>"
            "</cas:authenticationSuccess></cas:serviceResponse>"
        )

    return cas, tickets


@pytest.fixture
def student(session) -> Person:
    person = Person(
        number="2024000001", kind=PersonKind.STUDENT, name_zh="李雷", name_en="Lei Li"
    )
    session.add(person)
    session.commit()
    return person


def test_cas_sign_in_round_trip(settings, student):
    cas, _ = cas_server()
    number = student.number  # the other app's requests end this session
    with LoopbackServer(cas) as server:
        app = create_app(settings, cas_server_url=f"{server.url}/cas/")
        client = app.test_client()

        to_cas = client.get("/sign-in?next=/api/me/cards")
        login_url = to_cas.headers["Location"]
        service = parse_qs(urlsplit(login_url).query)["service"][0]
        # The browser at CAS: the user signs in and is sent back with a ticket.
        back = cas.test_client().get(
            "/cas/login", query_string={"service": service, "user": number}
        )
        landed = client.get(back.headers["Location"].replace("http://localhost", ""))
        cards = client.get("/api/me/cards")

    assert login_url.startswith(f"{server.url}/cas/login")
    assert landed.status_code == 302 and landed.headers["Location"] == "/api/me/cards"
    assert cards.status_code == 200 and cards.json == []


def test_a_replayed_cas_ticket_is_refused(settings, student):
    cas, _ = cas_server()
    with LoopbackServer(cas) as server:
        app = create_app(settings, cas_server_url=f"{server.url}/cas/")
        service = "http://localhost/sign-in/cas"
        ticket_url = (
            cas.test_client()
            .get(
                "/cas/login", query_string={"service": service, "user": student.number}
            )
            .headers["Location"]
        )
        path = ticket_url.replace("http://localhost", "")

        first = app.test_client().get(path)
        replay = app.test_client().get(path)

    assert first.status_code == 302
    assert replay.status_code == 401
    assert replay.json["code"] == "authentication_required"


def test_a_cas_user_without_a_campus_record_is_refused(settings):
    cas, _ = cas_server()
    with LoopbackServer(cas) as server:
        app = create_app(settings, cas_server_url=f"{server.url}/cas/")
        service = "http://localhost/sign-in/cas"
        path = (
            cas.test_client()
            .get("/cas/login", query_string={"service": service, "user": "stranger"})
            .headers["Location"]
            .replace("http://localhost", "")
        )

        response = app.test_client().get(path)

    assert response.status_code == 403


def test_development_sign_in_is_labelled_and_works(client, student):
    page = client.get("/sign-in/dev").get_data(as_text=True)
    signed_in = client.post(
        "/sign-in/dev?next=/api/me/cards", data={"number": student.number}
    )

    assert "仅供开发和演示使用" in page
    assert signed_in.headers["Location"] == "/api/me/cards"
    assert client.get("/api/me/cards").status_code == 200


def test_development_sign_in_refuses_an_unknown_number(client, student):
    response = client.post("/sign-in/dev", data={"number": "999"})

    assert "没有这个学号或工号" in response.get_data(as_text=True)
    assert client.get("/api/me/cards").status_code == 401


def test_sign_in_never_redirects_off_site(client, student):
    response = client.post(
        "/sign-in/dev?next=//evil.example/x", data={"number": student.number}
    )

    assert response.headers["Location"] == "/"


def test_development_sign_in_is_gone_when_switched_off(settings, student):
    app = create_app(settings, dev_signin=False)

    assert app.test_client().get("/sign-in/dev").status_code == 404


def test_operator_form_sign_in(client, session):
    from campus.auth import Role, create_operator

    create_operator(session, "registrar1", "a good password", [Role.REGISTRAR])
    session.commit()

    wrong = client.post(
        "/operator/sign-in", data={"username": "registrar1", "password": "nope nope"}
    )
    right = client.post(
        "/operator/sign-in",
        data={"username": "registrar1", "password": "a good password"},
    )

    assert "用户名或密码错误" in wrong.get_data(as_text=True)
    assert right.status_code == 302
