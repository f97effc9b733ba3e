"""Shared shape of the sweep commands: run one sweep, print its count, exit 1 on error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError


class SweepCommand(BaseCommand):
    sweep: Callable[..., int]
    done = "{count} dispatches"

    def sweep_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        return {}

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            count = type(self).sweep(**self.sweep_kwargs(options))
        except Exception as exc:
            raise CommandError(f"{self.__module__.rsplit('.', 1)[-1]} failed: {exc}") from exc
        self.report(count)

    def report(self, count: int) -> None:
        self.stdout.write(self.done.format(count=count))
