"""Closed-loop simulation of a home with the project's own planner and dispatcher in the loop.

Public surface (imported from the modules, so ``v2x`` starts without loading numpy or the solver)::

    from sim.scenario import load_scenario          # config YAML + series CSV + trips CSV
    from sim.generators import generate_scenario    # seeded synthetic scenarios
    from sim.runner import RunOptions, run_strategy # uncontrolled | smart | mpc | perfect
    from sim.metrics import compute_metrics

    result = run_strategy(load_scenario(config_yaml, series_csv, trips_csv), "mpc", RunOptions())
    metrics = compute_metrics(result)

``sim.cli.register`` adds the ``v2x sim`` command. See docs/simulator.md.
"""
