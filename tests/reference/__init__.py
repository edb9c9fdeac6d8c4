"""The reference side of the parity tests: the ORIGINAL code, fetched from PyPI into a cache folder
outside git and run apart from our packages (a clashing top-level `ldm` must never be imported here).
"""
