"""The scan operation: reference loop, checkpointed autograd.Function, backend dispatch."""
