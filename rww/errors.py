"""Exceptions raised by rww, each carrying what went wrong and where."""


class SimulationDiverged(RuntimeError):
    """A simulation left the model's domain: a non-finite state, or a Balloon state f, v or q that
    became non-positive (its powers are then undefined).

    Attributes:
        simulation: index b of the first simulation that diverged.
        step: global step index t of its first bad step.
        n_diverged: how many of the B simulations diverged.
    """

    def __init__(self, simulation: int, step: int, n_diverged: int, hint: str = ""):
        self.simulation = int(simulation)
        self.step = int(step)
        self.n_diverged = int(n_diverged)
        msg = (f"simulation {self.simulation} diverged at step {self.step} "
               f"({self.n_diverged} simulation(s) diverged in all): a state became non-finite "
               "or a Balloon state (f, v, q) became non-positive")
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)


class ScanMemoryError(MemoryError):
    """A gradient through the scan cannot fit the memory budget at any checkpoint interval.

    Attributes:
        needed: least bytes required (at the best checkpoint interval).
        budget: bytes available.
        max_batch: how many simulations of the same size would fit in one call.
    """

    def __init__(self, message: str, needed: int, budget: int, max_batch: int):
        self.needed, self.budget, self.max_batch = int(needed), int(budget), int(max_batch)
        super().__init__(message)
