"""The naive baseline: one Celery task per e-mail, one SMTP connection per e-mail."""

import os
import smtplib
from email.message import EmailMessage

from celery import shared_task


@shared_task(name="bench.naive_send", ignore_result=True)
def naive_send(to: str, subject: str, body: str) -> None:
    mail = EmailMessage()
    mail["From"] = "bench@example.org"
    mail["To"] = to
    mail["Subject"] = subject
    mail.set_content(body)
    with smtplib.SMTP("127.0.0.1", int(os.environ["DISPATCHER_SMTP_PORT"])) as smtp:
        smtp.send_message(mail)
