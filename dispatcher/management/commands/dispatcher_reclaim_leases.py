from dispatcher.sweeps import reclaim_expired_leases

from ._sweep import SweepCommand


class Command(SweepCommand):
    help = "Return dispatches whose worker died (expired lease) to ERROR, or FAILED when out of attempts."
    sweep = staticmethod(reclaim_expired_leases)
    done = "reclaimed {count} dispatches"
