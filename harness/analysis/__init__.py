"""What bench makes of stored measurements, beside the run report.

``stats`` (latency percentiles with their confidence intervals, used by the worker too),
``economics`` (cost per inference, budgets, Pareto frontiers, the cheapest configuration meeting an
SLO), ``comparison`` and ``intervals`` (a candidate run against a baseline, cell by cell),
``render`` (a comparison as text, Markdown, JSON, HTML), ``confirm`` (suspects measured again,
baseline and candidate code alternating), ``gate``, ``gate_sides`` and ``gate_stats`` (``bench gate``:
baseline code and candidate code measured in pairs of processes within a budget, where each side's
code comes from, and the statistics that judge them), ``history`` (a scenario's runs over time, change points).
Nothing here imports a runtime.
"""
