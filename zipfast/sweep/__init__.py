"""`zipfast sweep`: a grid of runs, hyperparameters × seeds × methods.

`zipfast.sweep.grid` turns what the user gives (--grid items, --seeds, a grid file) into a list of
`RunSpec`s and each into its `TrainConfig`; it runs nothing.
"""

from zipfast.sweep.grid import (MAX_RUNS, MAX_SEEDS, RunSpec, apply, check_runs, expand, load_grid_file, paper_grid,
                                parse_grid, parse_seeds, split_grid, sweep_keys)

__all__ = ["MAX_RUNS", "MAX_SEEDS", "RunSpec", "apply", "check_runs", "expand", "load_grid_file", "paper_grid",
           "parse_grid", "parse_seeds", "split_grid", "sweep_keys"]
