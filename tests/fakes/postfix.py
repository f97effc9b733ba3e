"""A real Postfix for the SMTP tests: its own instance, on loopback, that can
deliver nowhere but into its own mailboxes.

``PostfixServer`` writes a ``main.cf`` and ``master.cf`` into a temporary
directory (its own config, queue, data and mail directories; the system's
``/etc/postfix`` is never read or touched), asserts with ``postconf`` that the
instance listens on loopback only and that every non-local transport is
``error:``, then runs ``postfix -c <dir> start-fg`` in a process group of its
own. ``master.cf`` has no ``smtp``/``lmtp`` client service at all, so even a
wrong ``main.cf`` could not relay a mail anywhere.

Two listeners: ``port`` (STARTTLS with a certificate from a private CA,
SMTPUTF8, and ``smtpd_forbid_bare_newline = reject`` for every client,
loopback included) and ``ascii_port`` (the same, without SMTPUTF8). Mail for
``<user>@dispatcher.test`` is stored by virtual(8) in a Maildir per user;
``recipient_delimiter = +`` puts ``bounces+42@...`` in the ``bounces`` box.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from tests.services import free_ports, wait_for

# /usr/sbin may be off a non-root PATH.
POSTFIX = shutil.which("postfix", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
POSTCONF = shutil.which("postconf", path=f"{os.environ.get('PATH', '')}:/usr/sbin")

DOMAIN = "dispatcher.test"
HOSTNAME = f"mail.{DOMAIN}"
#: Local parts with a mailbox. "jürgen" needs SMTPUTF8 (not "grüße": with
#: SMTPUTF8 Postfix casefolds lookup keys, "ß" to "ss", and not table keys).
USERS = ("alice", "bob", "carol", "dave", "bounces", "jürgen")
#: Accepted at RCPT, then expanded to a domain nobody serves: bounced later,
#: to the envelope sender.
GONE = f"gone@{DOMAIN}"
#: An internationalized domain: Postfix knows it by its A-label, as DNS would.
IDN_DOMAIN = "bücher.test"
IDN_A_LABEL = "xn--bcher-kva.test"
#: Its one mailbox.
IDN_USER = "erin"
#: RCPT replies forced by check_recipient_access (a 4xx to test retries).
RECIPIENT_ACCESS = {f"tempfail@{DOMAIN}": "450 4.7.1 try again later (test)"}
NOWHERE = "error:5.7.1 this test server delivers to its own mailboxes only"


def missing() -> str | None:
    """Why a Postfix cannot be started here, or None."""
    if not (POSTFIX and POSTCONF):
        return "Postfix is not installed (Debian: apt-get install postfix; .ci/run installs it)"
    if os.geteuid() != 0:
        return "Postfix's master must start as root (the tests run as root in CI)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "the 'postfix' system user is missing (the Debian package creates it)"
    return None


MAIN_CF = """\
# Written by tests/fakes/postfix.py: a throw-away instance on loopback.
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
myhostname = {hostname}
mydomain = {domain}
myorigin = $myhostname
smtpd_banner = $myhostname ESMTP

# Loopback only, and nothing can leave: every non-local transport is error:.
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
relayhost =
default_transport = {nowhere}
relay_transport = {nowhere}
local_transport = {nowhere}
alias_maps =
alias_database =
smtpd_peername_lookup = no
# Leave headers as the client sent them (no Date, Message-Id or domain added),
# as a remote MX does: what the tests see is what the messenger wrote.
local_header_rewrite_clients =
biff = no

virtual_transport = virtual
virtual_mailbox_domains = {domain}, {idn_domain}
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = texthash:{conf}/mailboxes
virtual_alias_maps = texthash:{conf}/aliases
virtual_minimum_uid = 1
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
recipient_delimiter = +

# What this instance is here to check.
smtputf8_enable = yes
smtpd_forbid_bare_newline = reject
smtpd_forbid_bare_newline_exclusions =
smtpd_tls_security_level = may
smtpd_tls_cert_file = {conf}/server.pem
smtpd_tls_key_file = {conf}/server.key
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access texthash:{conf}/recipient_access
"""

#: No chroot (the queue holds no copy of /etc); no smtp, lmtp, local or pipe
#: service: nothing here can hand a mail to another machine or a program.
MASTER_CF = """\
# Written by tests/fakes/postfix.py.
127.0.0.1:{port} inet n - n - - smtpd
127.0.0.1:{ascii_port} inet n - n - - smtpd -o smtputf8_enable=no
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - n 1000? 1 tlsmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
virtual   unix - n n - - virtual
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class PostfixServer:
    """A Postfix instance of its own under a fresh temporary directory."""

    def __init__(self) -> None:
        import trustme

        # Not under pytest's tmp_path: that is 0700 root, and virtual(8)
        # writes the mailboxes as the postfix user.
        self.root = Path(tempfile.mkdtemp(prefix="dispatcher-postfix-"))
        self.root.chmod(0o755)
        self.conf = self.root / "conf"
        self.conf.mkdir()
        (self.root / "data").mkdir()
        (self.root / "queue").mkdir()
        postfix_user = pwd.getpwnam("postfix")
        self.uid, self.gid = postfix_user.pw_uid, postfix_user.pw_gid
        (self.root / "mail").mkdir()
        os.chown(self.root / "mail", self.uid, self.gid)
        (self.root / "data").chmod(0o755)
        os.chown(self.root / "data", self.uid, self.gid)

        self.ca = trustme.CA()
        self.ca_file = self.root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert = self.ca.issue_cert("127.0.0.1", HOSTNAME)
        cert.private_key_pem.write_to_path(str(self.conf / "server.key"))
        (self.conf / "server.key").chmod(0o600)
        cert.cert_chain_pems[0].write_to_path(str(self.conf / "server.pem"))
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(str(self.conf / "server.pem"), append=True)

        (self.conf / "mailboxes").write_text(
            "".join(f"{user}@{DOMAIN} {user}/\n" for user in USERS)
            + f"{IDN_USER}@{IDN_A_LABEL} {IDN_USER}/\n",
            encoding="utf-8",
        )
        (self.conf / "aliases").write_text(f"{GONE} gone@nowhere.invalid\n")
        (self.conf / "recipient_access").write_text(
            "".join(f"{address} {action}\n" for address, action in RECIPIENT_ACCESS.items())
        )
        self.proc: subprocess.Popen | None = None
        self.port = self.ascii_port = 0
        for attempt in range(3):  # a free port may be taken between choosing and binding it
            self.port, self.ascii_port = free_ports(2)
            self._write_config()
            try:
                self.start()
                break
            except AssertionError:
                self.stop()
                if attempt == 2:
                    raise

    # -- configuration ---------------------------------------------------------------
    def _write_config(self) -> None:
        (self.conf / "main.cf").write_text(MAIN_CF.format(
            root=self.root, conf=self.conf, hostname=HOSTNAME, domain=DOMAIN, idn_domain=IDN_A_LABEL,
            nowhere=NOWHERE,
            uid=self.uid, gid=self.gid,
        ))
        (self.conf / "master.cf").write_text(MASTER_CF.format(port=self.port, ascii_port=self.ascii_port))

    def postconf(self, *args: str) -> str:
        return subprocess.run(
            [POSTCONF or "postconf", "-c", str(self.conf), *args],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout

    def assert_isolated(self) -> None:
        """Refuse to start unless the instance can neither listen beyond loopback
        nor hand a mail to any other host."""
        names = ("inet_interfaces", "default_transport", "relay_transport", "relayhost",
                 "config_directory", "queue_directory")
        values = {}
        for line in self.postconf("-x", *names).splitlines():
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
        assert values["inet_interfaces"] == "loopback-only", values
        assert values["default_transport"].startswith("error:"), values
        assert values["relay_transport"].startswith("error:"), values
        assert values["relayhost"] == "", values
        assert Path(values["config_directory"]) == self.conf, values
        assert Path(values["queue_directory"]).is_relative_to(self.root), values
        services = self.postconf("-M").splitlines()
        commands = {line.split()[7] for line in services if len(line.split()) >= 8}
        assert not commands & {"smtp", "lmtp", "local", "pipe", "qmqpd", "pickup"}, services
        listeners = [line.split()[0] for line in services if line.split()[1] == "inet"]
        assert listeners and all(name.startswith("127.0.0.1:") for name in listeners), listeners

    # -- process ---------------------------------------------------------------------
    def start(self) -> None:
        self.assert_isolated()
        self.output = open(self.root / "stdout.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [POSTFIX or "postfix", "-c", str(self.conf), "start-fg"],
            stdout=self.output, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(self._ready, 60, 0.05, f"postfix to listen (log: {self.root / 'postfix.log'})")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"postfix exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
        for port in (self.port, self.ascii_port):
            try:
                with socket.create_connection(("127.0.0.1", port), 1) as sock:
                    sock.settimeout(5)
                    banner = sock.recv(512)
            except OSError:
                return False
            # A port taken by another server between choosing and binding it
            # would greet with another name.
            if not banner.startswith(f"220 {HOSTNAME} ESMTP".encode()):
                raise AssertionError(f"port {port} is not this Postfix: {banner!r}")
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run([POSTFIX or "postfix", "-c", str(self.conf), "stop"],
                           capture_output=True, timeout=30)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        if getattr(self, "output", None):
            self.output.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def logs(self) -> str:
        text = ""
        for path in (self.root / "stdout.log", self.root / "postfix.log"):
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    # -- mailboxes -------------------------------------------------------------------
    def raw_mails(self, user: str) -> list[bytes]:
        """What virtual(8) stored for ``user``, oldest first, as the bytes on disk."""
        new = self.root / "mail" / user / "new"
        if not new.is_dir():
            return []
        files = sorted(new.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [path.read_bytes() for path in files]

    def mails(self, user: str, count: int = 1, timeout: float = 30) -> list[EmailMessage]:
        """Wait until ``user`` has at least ``count`` mails; all of them, parsed."""
        wait_for(lambda: len(self.raw_mails(user)) >= count, timeout, 0.05,
                 f"{count} mail(s) for {user} (log: {self.root / 'postfix.log'})")
        return [message_from_bytes(raw, policy=policy.default) for raw in self.raw_mails(user)]  # type: ignore[misc]

    def clear(self) -> None:
        """Empty every mailbox, so a test sees only its own mail."""
        for user in (*USERS, IDN_USER):
            new = self.root / "mail" / user / "new"
            if new.is_dir():
                for path in new.iterdir():
                    path.unlink()

    def wait_idle(self, timeout: float = 30) -> None:
        """Until the queue is empty: every accepted mail delivered or bounced."""
        queue = self.root / "queue"

        def empty() -> bool:
            return not any(
                f.is_file() for sub in ("incoming", "active", "deferred", "maildrop")
                if (queue / sub).exists() for f in (queue / sub).rglob("*")
            )

        wait_for(empty, timeout, 0.1, "the Postfix queue to empty")
        time.sleep(0.05)
