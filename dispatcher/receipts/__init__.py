"""Delivery receipts: what providers report after they accepted a dispatch.

A provider's "accepted" (Postmark's MessageID, Twilio's ``queued``) is where
delivery state ends: SENT. What happens next comes later, from the provider:

- Postmark posts Delivery, Bounce and SpamComplaint webhooks
  (:mod:`.postmark`, authenticated by HTTP basic auth or a secret path);
- Twilio posts status callbacks (:mod:`.twilio`, signed with
  ``X-Twilio-Signature``);
- an SMTP server mails a bounce (a DSN) to the dispatch's own bounce address
  (``bounce_address="bounces+{id}@example.org"``), read from a Maildir or a
  pipe (:mod:`.dsn`).

Each is matched to its dispatch (the provider's id kept in ``Dispatch.result``,
or the bounce address) and recorded once as a
:class:`~dispatcher.models.DeliveryReceipt`: delivered, bounced or complained,
with the provider's time and reason (:func:`.core.record`). A hard bounce or a
complaint also puts the address on the suppression list
(:mod:`dispatcher.suppression`). A call that is not authenticated, or that is
not what the provider sends, is answered 4xx and records nothing.
"""
