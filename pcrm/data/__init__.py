"""Preference data: the bundled real comparisons and a loader for data from anywhere `datasets` reads.

Every TRL preference format is recognised from the columns (after an optional `columns` mapping):

- pairs, explicit prompt: `prompt`, `chosen`, `rejected`, each a string (standard) or a list of
  `{"role", "content"}` messages (conversational);
- pairs, implicit prompt: `chosen`, `rejected` only; their shared prefix becomes the prompt, as
  TRL's `trl.data_utils.extract_prompt` does (for raw Anthropic HH strings the prompt ends at the
  last shared "\\n\\nAssistant:", so that the two replies are all that differ);
- pairs with scores: `score_chosen`, `score_rejected` are kept; a pair whose chosen score is lower is
  swapped, a tie is skipped (counted in a warning);
- ranked: `prompt`, `responses`, `scores`, expanded to all ordered pairs (ties skipped) unless
  `expand_ranked=False`.

Loading, validation and transformation run on Arrow (`Dataset.map`/`filter`, batched), never
through one Python list of every row.

Modules: `sources` (where data comes from, opening it), `forensics` (why a file does not read), `formats`
(column mapping, recognising the format), `prompts` (implicit prompts), `validation` (row checks), `pairs`
(scores and ranked rows into ordered pairs), `report` (`LoadReport`), `content` (text of a response, content
hash), `loader` (`load_preferences`, in that order).
"""

from pcrm.data.content import as_text, fingerprint
from pcrm.data.formats import (
    COLUMN_TARGETS,
    FORMATS_HELP,
    PAIR_FIELDS,
    RANKED_FIELDS,
    SCORE_FIELDS,
    parse_columns,
    rename_columns,
)
from pcrm.data.loader import PARALLEL_ROWS, load_preferences, progress_bars
from pcrm.data.pairs import expand_ranked_rows
from pcrm.data.prompts import HH_ASSISTANT, extract_prompt
from pcrm.data.report import LoadReport
from pcrm.data.sources import BUNDLED, BUNDLED_DIR, FILE_FORMATS, load_source, verify_bundled_checksums
from pcrm.data.validation import check_text

# The private names `pcrm.evaluation.rewardbench` imports (from before the package was split).
_load, _rename, _check_text = load_source, rename_columns, check_text

__all__ = [
    "BUNDLED",
    "BUNDLED_DIR",
    "COLUMN_TARGETS",
    "FILE_FORMATS",
    "FORMATS_HELP",
    "HH_ASSISTANT",
    "PAIR_FIELDS",
    "PARALLEL_ROWS",
    "RANKED_FIELDS",
    "SCORE_FIELDS",
    "LoadReport",
    "as_text",
    "check_text",
    "expand_ranked_rows",
    "extract_prompt",
    "fingerprint",
    "load_preferences",
    "load_source",
    "parse_columns",
    "progress_bars",
    "rename_columns",
    "verify_bundled_checksums",
]
