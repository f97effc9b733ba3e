"""Fake provider servers and a proxy, real processes and sockets on loopback."""
