"""Tests of the HTTP messengers against fake provider servers on loopback."""
