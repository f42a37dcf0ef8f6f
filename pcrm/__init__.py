"""pcrm: reward models and preference-optimised policies trained with prior constraints (PCRM).

Layout, in pipeline order: data -> constraints -> losses -> trainers (reward, DPO) ->
evaluation / alignment -> commands (thin: Config + run) -> report.
"""

__version__ = "0.2.0"
