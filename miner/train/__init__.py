"""SAMU-XLSR distillation (paper section II-D): config, data, Eq. 3 sampling, tri-stage schedule, loop, checkpoints.

Entry point: :func:`miner.train.loop.train` (``miner train CONFIG`` on the command line).
"""
