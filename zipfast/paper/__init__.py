"""The paper's experiments: the official train.py surface, Dassl-format logs, the four protocols,
their tables and plots, and the sweep runner."""
