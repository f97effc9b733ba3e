"""Messengers configured from the environment.

Each messenger is registered only when its credentials are set, so a fresh
clone has just ``smtp`` (pointing at the local sink).
"""

from __future__ import annotations

from typing import Any

from .env import env_bool, env_float, env_int, env_str


def from_environment() -> dict[str, dict[str, Any]]:
    messengers: dict[str, dict[str, Any]] = {}
    if env_str("DISPATCHER_XMPP_JID"):
        messengers["xmpp"] = {
            "class": "messengers.xmpp.XMPPMessenger",
            "options": {
                "from_jid": env_str("DISPATCHER_XMPP_JID"),
                "password": env_str("DISPATCHER_XMPP_PASSWORD"),
                "host": env_str("DISPATCHER_XMPP_HOST") or None,
                "port": env_int("DISPATCHER_XMPP_PORT", 0) or None,
                "direct_tls": env_bool("DISPATCHER_XMPP_DIRECT_TLS", False),
                "plaintext": env_bool("DISPATCHER_XMPP_PLAINTEXT", False),
                "ca_file": env_str("DISPATCHER_XMPP_CA_FILE") or None,
                "verify": env_bool("DISPATCHER_XMPP_VERIFY", True),
                "proxy": env_str("DISPATCHER_XMPP_PROXY") or None,
                "timeout": env_float("DISPATCHER_XMPP_TIMEOUT", 30),
            },
        }
    return messengers
