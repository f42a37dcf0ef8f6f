"""pcrm: reward models and preference-optimised policies trained with prior constraints (PCRM).

Layout: data + constraints -> losses -> trainers -> evaluation / alignment -> CLI / report.
"""

__version__ = "0.1.0"
