"""Executors run one cell's job somewhere and return its result record."""
