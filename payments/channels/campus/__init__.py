"""The campus channel: the card's own wallet, paid by a dynamic payment code
(``codes``) or a tapped card, with the card PIN (``pin``) for larger amounts.

It needs no adapter behind ``Channel``: the money never leaves our ledger, so a
payment is one database transaction (``payments.pos.service``) and there is
nothing to query, reverse or be notified of.
"""
