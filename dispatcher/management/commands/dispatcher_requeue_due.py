from dispatcher.sweeps import requeue_due

from ._sweep import SweepCommand


class Command(SweepCommand):
    help = "Publish due pending/error dispatches whose task was lost or never published."
    sweep = staticmethod(requeue_due)
    done = "requeued {count} dispatches"
