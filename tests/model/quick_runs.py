"""Command-line settings that keep the tests' training runs short."""

#: cheap planning and updates so that a few hundred steps take seconds on a CPU
SMALL = ["--config", "batch_size=32", "--config", "num_samples=32", "--config", "num_elites=4",
         "--config", "num_pi_trajs=4", "--config", "iterations=1"]  # fmt: skip
