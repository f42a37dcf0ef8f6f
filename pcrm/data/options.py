"""`DataOptions`: where a run's preference pairs come from, as the library functions take it (the commands' flat
`--data`, `--split`, `--data-config`, `--columns` options, gathered)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class DataOptions:
    """A preference data source (bundled name, file, directory or Hub id), its split, the configuration name of a
    dataset repository and a column mapping (`chosen=good,rejected=bad,prompt=question`)."""

    data: str = "hh-rlhf-harmless"
    split: str = "train"
    data_config: str | None = None
    columns: str | None = None

    def load(self, **kwargs):
        """`pcrm.data.load_preferences` of this source; `kwargs` are its other options (report, expand_ranked...)."""
        from pcrm.data import load_preferences

        return load_preferences(
            self.data, split=self.split, config_name=self.data_config, columns=self.columns, **kwargs
        )


# The help texts of the commands' --data-config and --columns options (the fields of `DataOptions`).
DATA_CONFIG_HELP = "configuration name of a Hub/local dataset repository (load_dataset's name)"
COLUMNS_HELP = (
    "map column names: chosen=good,rejected=bad,prompt=question (also responses, scores, score_chosen, score_rejected)"
)
