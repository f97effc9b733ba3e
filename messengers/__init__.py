"""Transports. Each module speaks one protocol; ``base`` holds the contract."""
