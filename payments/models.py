"""The payments tables, imported together for Alembic."""

from payments.cards import Card, CardStatusChange
from payments.channels.received import ReceivedNotification
from payments.ledger import Account, JournalEntry, Posting
from payments.merchants import Merchant, Terminal

__all__ = [
    "Account",
    "Card",
    "CardStatusChange",
    "JournalEntry",
    "Merchant",
    "Posting",
    "ReceivedNotification",
    "Terminal",
]
