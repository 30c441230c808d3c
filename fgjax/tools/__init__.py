"""Command-line tools that are not part of training: benchmarks, table writers, checks.

Each is run as ``python -m fgjax.tools.<name>``; the library modules carry no
``__main__`` blocks.
"""
