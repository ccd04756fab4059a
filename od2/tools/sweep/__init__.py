"""``od2 sweep SPEC.yaml``: several seeds per arm of an ablation, run locally or on SLURM (docs/sweeps.md).

``spec`` reads and checks the spec, ``folder`` knows the sweep folder (run states, sweep.json), ``commands`` the
processes of one run, ``estimate`` and ``plan`` the dry run, ``runner`` the executors.
"""

from .runner import SweepOptions, dry_run, run_sweep
from .spec import SweepSpec, load_spec, plan_runs

__all__ = ["SweepOptions", "SweepSpec", "dry_run", "load_spec", "plan_runs", "run_sweep"]
