from django.conf import settings

from dispatcher.sweeps import cleanup_sent

from ._sweep import SweepCommand


class Command(SweepCommand):
    help = "Delete SENT dispatches older than --days (default DISPATCHER_CLEANUP_DAYS), in bounded chunks."
    sweep = staticmethod(cleanup_sent)
    done = "deleted {count} sent dispatches"

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=settings.DISPATCHER_CLEANUP_DAYS)

    def sweep_kwargs(self, options):
        return {"days": options["days"]}
