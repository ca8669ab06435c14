"""Run isolation: worker processes, the cost budget, shared-memory transport and wire formats."""
