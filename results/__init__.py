"""Data shipped with EGS-Bench: the papers' reference tables, golden smoke records, tolerances, sweep files.

A package only so that installs carry these files next to ``benchmark/``; there is no code here.
"""
