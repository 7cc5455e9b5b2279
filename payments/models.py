"""The payments tables, imported together for Alembic."""

from payments.cards import Card, CardStatusChange
from payments.channel_log import ChannelCall, NotificationRecord
from payments.channels.received import ReceivedNotification
from payments.ledger import Account, JournalEntry, Posting
from payments.merchants import Merchant, Terminal
from payments.pos.models import (
    CampusCode,
    CardPin,
    CashierMerchant,
    PosPayment,
    PosRefund,
    TerminalNonce,
)
from payments.purse import PurseLoad
from payments.topups import TopUp

__all__ = [
    "Account",
    "CampusCode",
    "Card",
    "ChannelCall",
    "CardPin",
    "CardStatusChange",
    "CashierMerchant",
    "JournalEntry",
    "Merchant",
    "NotificationRecord",
    "PosPayment",
    "PosRefund",
    "Posting",
    "PurseLoad",
    "ReceivedNotification",
    "Terminal",
    "TerminalNonce",
    "TopUp",
]
