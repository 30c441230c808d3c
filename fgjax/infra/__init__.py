"""Machinery the methods run on: devices and processes, precision, checkpoints, workdirs, logs.

Nothing here knows a method's math; the trainer (``fgjax.train``) joins the two.
"""
