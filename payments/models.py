"""The payments tables, imported together for Alembic."""

from payments.cards import Card, CardStatusChange
from payments.channel_log import ChannelCall, NotificationRecord
from payments.channels.received import ReceivedNotification
from payments.ledger import Account, JournalEntry, Posting
from payments.merchants import Merchant, Terminal
from payments.purse import PurseLoad
from payments.topups import TopUp

__all__ = [
    "Account",
    "Card",
    "ChannelCall",
    "CardStatusChange",
    "JournalEntry",
    "Merchant",
    "NotificationRecord",
    "Posting",
    "PurseLoad",
    "ReceivedNotification",
    "Terminal",
    "TopUp",
]
