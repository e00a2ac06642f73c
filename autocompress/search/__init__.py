"""Search: jobs, spaces, the runner and the Pareto front."""
