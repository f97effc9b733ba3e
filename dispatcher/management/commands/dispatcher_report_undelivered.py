from django.conf import settings

from dispatcher.sweeps import report_undelivered

from ._sweep import SweepCommand


class Command(SweepCommand):
    help = "Mail ADMINS a summary of dispatches that failed in the last --hours."
    sweep = staticmethod(report_undelivered)

    def add_arguments(self, parser):
        parser.add_argument("--hours", type=int, default=24)

    def sweep_kwargs(self, options):
        self.hours = options["hours"]
        return {"hours": options["hours"]}

    def report(self, count: int) -> None:
        """Say what was done: mailed to whom, or why nobody got anything."""
        failed = f"{count} dispatch{'es' if count != 1 else ''} failed in the last {self.hours} hours"
        if not count:
            self.stdout.write(f"no dispatch failed in the last {self.hours} hours: nothing to report")
        elif not settings.ADMINS:
            self.stdout.write(f"{failed}; not reported: ADMINS is empty (DJANGO_ADMINS here)")
        else:
            to = ", ".join(admin if isinstance(admin, str) else admin[1] for admin in settings.ADMINS)
            self.stdout.write(f"{failed}; reported to {to}")
