"""What a load read and did: `LoadReport`."""

import logging
from dataclasses import dataclass, field

logger = logging.getLogger("pcrm")


@dataclass
class LoadReport:
    """What `load_preferences(..., report=LoadReport())` read and did (`pcrm.console.print_data_summary` prints it).

    Given a report, the loader records its counts here instead of logging them as warnings (the data summary of
    a command says them once)."""

    source: str = ""  # the data and split read
    layout: str = ""  # "pairs", "pairs with scores", "ranked", "RewardBench v1 pairs", ...
    style: str = ""  # "standard" (text) or "conversational" (lists of messages)
    prompt: str = ""  # how the prompt was found
    rows: int = 0  # rows read
    pairs: int = 0  # rows (pairs, or ranked rows when not expanded) returned
    dropped: dict = field(default_factory=dict)  # reason -> rows dropped
    flagged: dict = field(default_factory=dict)  # reason -> rows kept but suspicious, or changed (swapped)
    warn: bool = field(default=False, repr=False)  # also log the counts as warnings (the caller passed no report)

    def tally(self, group: str, reason: str, n: int, message: str) -> None:
        """Add `n` rows to `reason` in `group` ("dropped" or "flagged"); log `message` when `warn`."""
        counts = getattr(self, group)
        counts[reason] = counts.get(reason, 0) + n
        if self.warn:
            logger.warning("%s", message)
