from dispatcher.sweeps import report_undelivered

from ._sweep import SweepCommand


class Command(SweepCommand):
    help = "Mail ADMINS a summary of dispatches that failed in the last --hours."
    sweep = staticmethod(report_undelivered)
    done = "{count} undelivered dispatches reported"

    def add_arguments(self, parser):
        parser.add_argument("--hours", type=int, default=24)

    def sweep_kwargs(self, options):
        return {"hours": options["hours"]}
