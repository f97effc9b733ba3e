"""E-mail over SMTP: ``from messengers.smtp import SMTPMessenger``.

``messenger`` holds the messenger and its transactions, ``compose`` turns a
dispatch into an envelope and bytes (addresses, headers, DKIM, bounce
addresses), ``connections`` keeps connections between batches.
"""

from .compose import EMAIL_RE, POLICY, UTF8_QP, BounceAddress, DKIMSigner, Sender
from .connections import IDLE, IdleConnections
from .messenger import SMTPMessenger, classify_smtp_error

__all__ = [
    "EMAIL_RE", "IDLE", "POLICY", "UTF8_QP", "BounceAddress", "DKIMSigner", "IdleConnections",
    "SMTPMessenger", "Sender", "classify_smtp_error",
]
