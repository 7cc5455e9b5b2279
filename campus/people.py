"""People: the identities both halves of the service share.

A person is a student or a member of staff, known by the university's own number
(学号 / 工号). Payments hangs a card on a person; transcripts hangs academic records
on one. Neither half needs to know about the other.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from campus.database import Base, str_enum, utcnow


class PersonKind(enum.StrEnum):
    """What a person is to the university."""

    STUDENT = "student"
    """Enrolled, or a graduate; signs in through CAS or the development sign-in."""

    STAFF = "staff"
    """Employed by the university; may hold a card, may also be an operator."""


class Person(Base):
    __tablename__ = "people"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[PersonKind] = mapped_column(str_enum(PersonKind))
    name_zh: Mapped[str] = mapped_column(String(64))
    name_en: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"<Person {self.number}>"


def find_person(session: Session, number: str) -> Person | None:
    return session.scalar(select(Person).where(Person.number == number))
