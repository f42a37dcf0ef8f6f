"""The console of a training run: one progress bar with the key figures in its postfix, or nothing.

transformers' `ProgressCallback` writes every log record as a Python dict beside the bar, and with
the bar disabled its `PrinterCallback` prints the same dicts; the JSON-lines log keeps every step,
so the console shows only the bar (`progress=True`) or stays silent (`progress=False`).
"""

from transformers import PrinterCallback, ProgressCallback


class PostfixProgress(ProgressCallback):
    """`ProgressCallback` whose log records become the bar's postfix (only `keys`, formatted short)."""

    def __init__(self, keys: dict[str, str]):
        super().__init__()
        self.keys = keys  # log key -> short label

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.set_description("training", refresh=False)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            shown = {
                label: f"{logs[key]:.3g}" for key, label in self.keys.items() if isinstance(logs.get(key), (int, float))
            }
            if shown:
                self.training_bar.set_postfix(shown, refresh=False)


def set_console(trainer, progress: bool, keys: dict[str, str]) -> None:
    """Replace the trainer's console callbacks: a postfix progress bar when `progress`, else none."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.add_callback(PostfixProgress(keys))
