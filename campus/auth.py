"""Who is asking: operators with roles, students through CAS or development sign-in.

Operators (finance staff, cashiers, the registrar, auditors, administrators) sign in
with a password hashed by Argon2. Students sign in through the university's CAS
server when ``CAMPUS_CAS_SERVER_URL`` is set; in the embedded default a development
sign-in, labelled as such on the page, lets anyone pick a demo student. Production
mode refuses to start with the development sign-in enabled.

Both kinds of sign-in live in the Flask session cookie. Terminals authenticate each
request with their own key instead; see ``payments.terminal_auth``.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from apiflask import APIBlueprint, Schema, fields
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cas import CASClient
from flask import (
    Flask,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext, lazy_gettext
from sqlalchemy import Boolean, ForeignKey, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship
from werkzeug.wrappers import Response

from campus.database import Base, db, str_enum, utcnow
from campus.errors import AuthenticationRequired, Forbidden, InvalidInput, wants_page
from campus.people import Person, PersonKind, find_person

logger = logging.getLogger(__name__)

password_hasher = PasswordHasher()

F = TypeVar("F", bound=Callable[..., Any])


class Role(enum.StrEnum):
    """What an operator may do. ``admin`` passes every role check."""

    ADMIN = "admin"
    """Opens and closes cards, manages merchants, terminals and operators."""

    FINANCE = "finance"
    """Reconciles, resolves discrepancies, refunds, settles merchants."""

    CASHIER = "cashier"
    """Works a service desk or canteen: freezes lost cards, refunds the day's
    payments of their merchant."""

    REGISTRAR = "registrar"
    """Issues, revokes and supersedes transcripts."""

    AUDITOR = "auditor"
    """Reads everything, changes nothing."""


class Operator(Base):
    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    password_hash: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    roles: Mapped[list[OperatorRole]] = relationship(
        cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def role_names(self) -> set[Role]:
        return {grant.role for grant in self.roles}

    def has_role(self, *wanted: Role) -> bool:
        names = self.role_names
        return Role.ADMIN in names or any(role in names for role in wanted)

    def set_password(self, password: str) -> None:
        if len(password) < 8:
            raise InvalidInput(lazy_gettext("A password needs at least 8 characters."))
        self.password_hash = password_hasher.hash(password)

    def check_password(self, password: str) -> bool:
        try:
            password_hasher.verify(self.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return True


class OperatorRole(Base):
    __tablename__ = "operator_roles"

    operator_id: Mapped[int] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[Role] = mapped_column(str_enum(Role), primary_key=True)


def create_operator(
    session: Session,
    username: str,
    password: str,
    roles: list[Role],
    display_name: str | None = None,
) -> Operator:
    operator = Operator(username=username, display_name=display_name or username)
    operator.set_password(password)
    operator.roles = [OperatorRole(role=role) for role in roles]
    session.add(operator)
    session.flush()
    logger.info(
        "operator_created",
        extra={"operator": username, "roles": ",".join(sorted(roles))},
    )
    return operator


# -- who is signed in ----------------------------------------------------------


def current_operator() -> Operator | None:
    if "operator" not in g:
        operator_id = session.get("operator_id")
        operator = db.session.get(Operator, operator_id) if operator_id else None
        g.operator = operator if operator is not None and operator.active else None
    return g.operator


def current_student() -> Person | None:
    if "student" not in g:
        person_id = session.get("person_id")
        g.student = db.session.get(Person, person_id) if person_id else None
    return g.student


def requires_role(*roles: Role) -> Callable[[F], F]:
    """Refuse the view unless an active operator with one of ``roles`` (or admin)
    is signed in."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            _check_roles(roles)
            return view(*args, **kwargs)

        # Read by the before-request check below: apiflask's input decorators wrap
        # this one and would otherwise validate a stranger's request first.
        checked.required_roles = roles  # type: ignore[attr-defined]
        return checked  # type: ignore[return-value]

    return decorate


def _check_roles(roles: tuple[Role, ...]) -> None:
    if g.get("roles_checked") == roles:
        return
    operator = current_operator()
    if operator is None:
        raise AuthenticationRequired()
    if not operator.has_role(*roles):
        logger.warning(
            "role_refused",
            extra={
                "operator": operator.username,
                "needed": ",".join(roles),
                "path": request.path,
            },
        )
        raise Forbidden(
            gettext("This needs the role: %(roles)s", roles=", ".join(roles))
        )
    g.roles_checked = roles


def _required_roles(view: Callable[..., Any] | None) -> tuple[Role, ...] | None:
    """The roles ``requires_role`` asks of ``view`` or of a function it wraps."""
    seen: set[int] = set()
    while view is not None and id(view) not in seen:
        seen.add(id(view))
        roles = (
            view.__dict__.get("required_roles") if hasattr(view, "__dict__") else None
        )
        if roles is not None:
            return roles  # type: ignore[no-any-return]
        view = getattr(view, "__wrapped__", None)
    return None


def requires_student(view: F) -> F:
    """Refuse the view unless a student is signed in: a browser is sent to the
    sign-in page and back, a program gets 401."""

    @functools.wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        refusal = _student_refusal()
        if refusal is not None:
            return refusal
        return view(*args, **kwargs)

    # Read before the request's input is validated, as ``required_roles`` is.
    checked.requires_student = True  # type: ignore[attr-defined]
    return checked  # type: ignore[return-value]


def _student_refusal() -> Response | None:
    if current_student() is not None:
        return None
    if request.accept_mimetypes.accept_html and not request.is_json:
        return redirect(url_for("auth.student_sign_in", next=request.path))
    raise AuthenticationRequired()


def needs_student(view: Callable[..., Any] | None) -> bool:
    seen: set[int] = set()
    while view is not None and id(view) not in seen:
        seen.add(id(view))
        if hasattr(view, "__dict__") and view.__dict__.get("requires_student"):
            return True
        view = getattr(view, "__wrapped__", None)
    return False


def _safe_next(target: str | None) -> str:
    # Only paths on this site: an absolute URL here would make the sign-in page an
    # open redirect.
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("index")


# -- views ---------------------------------------------------------------------

bp = APIBlueprint("auth", __name__, tag="Sign-in", template_folder="templates")


class OperatorSignIn(Schema):
    username = fields.String(required=True)
    password = fields.String(required=True)


class OperatorOut(Schema):
    username = fields.String()
    display_name = fields.String()
    roles = fields.List(fields.String())


def _operator_out(operator: Operator) -> dict[str, Any]:
    return {
        "username": operator.username,
        "display_name": operator.display_name,
        "roles": sorted(operator.role_names),
    }


@bp.post("/api/operators/sign-in")
@bp.input(OperatorSignIn, arg_name="credentials")
@bp.output(OperatorOut)
@bp.doc(summary="Operator sign-in", responses=[401])
def operator_sign_in_api(credentials: dict[str, str]) -> dict[str, Any]:
    operator = _check_operator(credentials["username"], credentials["password"])
    return _operator_out(operator)


def _check_operator(username: str, password: str) -> Operator:
    operator = db.session.scalar(select(Operator).where(Operator.username == username))
    if operator is None or not operator.active or not operator.check_password(password):
        logger.warning("operator_sign_in_refused", extra={"operator": username})
        raise AuthenticationRequired(gettext("Wrong username or password."))
    session.clear()
    session["operator_id"] = operator.id
    logger.info("operator_signed_in", extra={"operator": username})
    return operator


@bp.post("/api/sign-out")
@bp.doc(summary="Sign out (operators and students)")
def sign_out_api() -> tuple[str, int]:
    session.clear()
    return "", 204


@bp.route("/operator/sign-in", methods=["GET", "POST"])
@bp.doc(hide=True)
def operator_sign_in() -> Any:
    error = None
    if request.method == "POST":
        try:
            _check_operator(
                request.form.get("username", ""), request.form.get("password", "")
            )
        except AuthenticationRequired as refusal:
            error = refusal.detail
        else:
            return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/operator_sign_in.html", error=error)


def _cas_client() -> CASClient:
    settings = current_app.extensions["campus.settings"]
    return CASClient(
        version=3,
        server_url=settings.cas_server_url,
        service_url=url_for(
            "auth.cas_callback", next=request.args.get("next"), _external=True
        ),
    )


@bp.get("/sign-in")
@bp.doc(hide=True)
def student_sign_in() -> Any:
    settings = current_app.extensions["campus.settings"]
    if settings.cas_server_url:
        return redirect(_cas_client().get_login_url())
    if _dev_signin_allowed():
        return redirect(url_for("auth.dev_sign_in", next=request.args.get("next")))
    abort(503)


@bp.get("/sign-in/cas")
@bp.doc(hide=True)
def cas_callback() -> Response:
    ticket = request.args.get("ticket")
    if not ticket:
        raise AuthenticationRequired(gettext("The sign-in service sent no ticket."))
    user, attributes, _ = _cas_client().verify_ticket(ticket)
    if not user:
        logger.warning("cas_ticket_refused")
        raise AuthenticationRequired(gettext("The sign-in ticket was not accepted."))
    person = find_person(db.session, user)
    if person is None:
        logger.warning("cas_user_unknown", extra={"person": user})
        raise Forbidden(gettext("No campus record for this account."))
    _sign_in_person(person, via="cas")
    return redirect(_safe_next(request.args.get("next")))


def _dev_signin_allowed() -> bool:
    settings = current_app.extensions["campus.settings"]
    return settings.dev_signin and not settings.production


@bp.route("/sign-in/dev", methods=["GET", "POST"])
@bp.doc(hide=True)
def dev_sign_in() -> Any:
    if not _dev_signin_allowed():
        abort(404)
    error = None
    if request.method == "POST":
        person = find_person(db.session, request.form.get("number", "").strip())
        if person is None:
            error = gettext("No such student or staff number.")
        else:
            _sign_in_person(person, via="development")
            return redirect(_safe_next(request.args.get("next")))
    examples = db.session.scalars(
        select(Person)
        .where(Person.kind == PersonKind.STUDENT)
        .order_by(Person.number)
        .limit(5)
    ).all()
    return render_template("auth/dev_sign_in.html", error=error, examples=examples)


def _sign_in_person(person: Person, via: str) -> None:
    session.clear()
    session["person_id"] = person.id
    logger.info("person_signed_in", extra={"person": person.number, "via": via})


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.before_request
    def _forget_who() -> None:
        # The signed-in user is cached on g; a request may share its app context
        # with an enclosing one (the CLI, tests), so start each request afresh.
        g.pop("operator", None)
        g.pop("student", None)
        g.pop("roles_checked", None)

    @app.before_request
    def _roles_before_input() -> Response | None:
        # Who may call comes before what they sent: a stranger gets 401/403, never
        # the schema's field errors of an endpoint they may not use.
        view = app.view_functions.get(request.endpoint or "")
        roles = _required_roles(view)
        if roles is not None:
            if current_operator() is None and wants_page():
                # A person at a staff page: to the sign-in form and back here.
                return redirect(url_for("auth.operator_sign_in", next=request.path))
            _check_roles(roles)
        if needs_student(view):
            return _student_refusal()
        return None
