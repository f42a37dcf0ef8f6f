"""The `pcrm` command line: one subcommand per task, each driven by one config dataclass.

Options come from the dataclass fields through `transformers.HfArgumentParser` (`--field-name`,
help from the field's metadata); a field whose type is itself a dataclass (e.g. a command's
`prior: PriorOptions`) contributes its own fields as options. `--config FILE.yaml` sets values
from a YAML mapping and command-line options override it. Repeatable options accept both
`--x a b` and `--x a --x b`. User errors print one line and exit with status 2.
"""

import argparse
import dataclasses
import errno
import importlib
import os
import sys
import types
import typing

from transformers import HfArgumentParser

from pcrm.errors import PcrmError

# name -> (module, help). Each module has `Config` (a dataclass) and `run(config) -> dict`.
COMMANDS = {
    "constraints": ("pcrm.commands.constraints", "compute, cache and summarise the prior constraints of a dataset"),
    "train-rm": ("pcrm.commands.train_rm", "train a reward model with the ranking loss or PCRM"),
    "evaluate": ("pcrm.commands.evaluate", "evaluate reward models: accuracy, rank correlation, scale, calibration"),
    "report": ("pcrm.commands.report", "write the HTML/Markdown report comparing reward models"),
    "train-dpo": ("pcrm.commands.train_dpo", "align a policy with DPO (or IPO/hinge), with or without PCRM"),
    "evaluate-policy": (
        "pcrm.commands.evaluate_policy",
        "judge aligned policies: implicit rewards and judge win rates",
    ),
    "align": ("pcrm.commands.align", "best-of-N, PPO, RLOO or GRPO against a trained reward model"),
    "reproduce": ("pcrm.commands.reproduce", "reproduce the paper's comparison on the bundled data"),
    "overoptimization": (
        "pcrm.commands.overoptimization",
        "gold-reward over-optimisation study: best-of-N by proxies trained on gold labels",
    ),
}


class _Repeatable(argparse.Action):
    """`--x a b --x c` gives [a, b, c]; the first use replaces the default (the dataclass's or a YAML file's)."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = namespace.__dict__.setdefault("_repeated", set())
        items = list(getattr(namespace, self.dest)) if self.dest in seen else []
        seen.add(self.dest)
        setattr(namespace, self.dest, items + list(values))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default said once: not appended where the help already speaks of its default, nor for a
    required option, an empty list or None (nothing given), nor for an `--no-X` switch (`_say_what_off_means`)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "default" in text.lower()
            or action.required
            or action.default is None
            or action.default == []
            or isinstance(action, argparse._StoreFalseAction)
        ):
            return text
        return super()._get_help_string(action)


def _say_what_off_means(action) -> None:
    """HfArgumentParser gives `--no-X` (of a boolean option on by default) the help of `--X` with "(default: False)",
    which reads as the opposite of what it does; say that it turns X off."""
    if isinstance(action, argparse._StoreFalseAction) and action.option_strings[0].startswith("--no_"):
        positive = action.option_strings[-1].removeprefix("--no-")
        action.help = f"turn --{positive} off (--{positive}: {action.help}; on by default)"


class ConfigParser(HfArgumentParser):
    """`HfArgumentParser` over a command's `Config`: nested dataclasses flattened, YAML files, one-line errors."""

    def __init__(self, config_class, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        self.config_class = config_class
        hints = typing.get_type_hints(config_class)
        self.nested = {
            f.name: hints[f.name] for f in dataclasses.fields(config_class) if dataclasses.is_dataclass(hints[f.name])
        }
        top = dataclasses.make_dataclass(
            config_class.__name__,
            [
                (f.name, hints[f.name], _copy_field(f))
                for f in dataclasses.fields(config_class)
                if f.name not in self.nested
            ],
        )
        super().__init__([top, *self.nested.values()], **kwargs)
        self.hints = {f.name: hints[f.name] for f in dataclasses.fields(config_class) if f.name not in self.nested}
        for kind in self.nested.values():
            self.hints.update(typing.get_type_hints(kind))
        for field in dataclasses.fields(config_class):
            if field.name in self.nested and field.default_factory is not dataclasses.MISSING:
                self.set_defaults(
                    **dataclasses.asdict(field.default_factory())
                )  # a command may change the nested defaults
        for action in self._actions:
            if action.nargs == "+":
                action.__class__ = _Repeatable
            _say_what_off_means(action)
        self.add_argument(
            "--config",
            metavar="FILE.yaml",
            help="read option values from a YAML mapping; options given here override it",
        )
        self.add_argument(
            "--verbose",
            action="store_true",
            help="also show the libraries' progress bars, load reports and warnings (hidden by default)",
        )

    def error(self, message):
        raise PcrmError(message)

    def parse_config(self, argv: list[str]):
        """The command's `Config` from `argv` (and the YAML file of `--config`)."""
        config_file = _option_value(argv, "--config")
        if config_file is not None:
            self.set_defaults(**self._read_yaml(config_file))
        namespace = self.parse_args(argv)
        values = {k: v for k, v in vars(namespace).items() if k not in ("_repeated", "config", "verbose")}
        _check_links(values)
        nested = {}
        for name, kind in self.nested.items():
            names = [f.name for f in dataclasses.fields(kind)]
            nested[name] = kind(**{n: values.pop(n) for n in names})
        return self.config_class(**values, **nested)

    def _read_yaml(self, path: str) -> dict:
        import yaml

        try:
            with open(path, encoding="utf-8") as f:
                values = yaml.safe_load(f)
        except OSError as err:
            raise PcrmError(f"--config {path}: {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise PcrmError(f"--config {path}: not UTF-8 text (invalid byte 0x{err.object[err.start]:02x})") from None
        except yaml.YAMLError as err:
            raise PcrmError(f"--config {path}: invalid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise PcrmError(f"--config {path}: expected a mapping of option names to values")
        known = {action.dest for action in self._actions}
        values = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PcrmError(f"--config {path}: unknown option(s) {', '.join(unknown)}")
        return {
            key: _typed(value, self.hints[key], f"--config {path}: {key}") if key in self.hints else value
            for key, value in values.items()
        }


def _typed(value, hint, where: str):
    """A YAML value as the option's type (int, float, str, bool, list of them, or None where optional); else one line.

    YAML's own types are taken strictly: `true` is no learning rate, 12.7 no token count, a string no list."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(hint)):
            return None
        hint = args[0] if len(args) == 1 else hint
    if typing.get_origin(hint) is list:
        if not isinstance(value, list):
            raise PcrmError(f"{where} must be a list (- item per line, or [a, b]), got {value!r}")
        (item,) = typing.get_args(hint) or (str,)
        return [_typed(v, item, where) for v in value]
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool),
    }
    if hint in ok:
        if not ok[hint](value):
            raise PcrmError(f"{where} must be {names[hint]}, got {'null' if value is None else repr(value)}")
        return hint(value)
    return value


def _check_links(values: dict) -> None:
    """A path option naming a symbolic link that leads nowhere (broken, or a loop) is said so, not "no such file"."""
    for value in values.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item and os.path.islink(item) and not os.path.exists(item):
                try:
                    os.stat(item)
                except OSError as err:
                    what = "a symbolic link loop" if err.errno == errno.ELOOP else "a broken symbolic link"
                    raise PcrmError(f"{item}: {what}") from None


def _copy_field(field: dataclasses.Field) -> dataclasses.Field:
    if field.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=field.default_factory, metadata=field.metadata)
    return dataclasses.field(default=field.default, metadata=field.metadata)


def _option_value(argv: list[str], option: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == option:
            if i + 1 >= len(argv):
                raise PcrmError(f"{option} needs a file name")
            return argv[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def command_parser(name: str) -> ConfigParser:
    """The parser of one command (imports only that command's module)."""
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    return ConfigParser(module.Config, prog=f"pcrm {name}", description=(module.Config.__doc__ or help_text).strip())


def parse_command(argv: list[str]):
    """(command name, its module, its Config) of a full command line such as `["train-rm", "--method", "bt"]`."""
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise PcrmError(f"unknown command {name!r} (choose from {', '.join(COMMANDS)})")
    return name, importlib.import_module(COMMANDS[name][0]), command_parser(name).parse_config(rest)


def _usage() -> str:
    from pcrm import __version__

    width = max(map(len, COMMANDS))
    lines = [
        f"pcrm {__version__}: reward models and policies trained with prior constraints (PCRM).",
        "",
        "usage: pcrm COMMAND [options]   (pcrm COMMAND --help for its options)",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from pcrm import __version__

        print(f"pcrm {__version__}")
        return 0
    command = argv[0]
    debug = os.environ.get("PCRM_DEBUG", "") not in ("", "0")
    try:
        name, module, config = parse_command(argv)
        from pcrm.console import progress_bars, report_repeats

        _quiet_libraries(verbose="--verbose" in argv[1:])
        with progress_bars(getattr(config, "progress", True)):  # --no-progress: no library's bar, --verbose or not
            module.run(config)

        report_repeats()
    except KeyboardInterrupt:
        _close_progress_bars()
        print(f"pcrm {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        _close_progress_bars()
        message = user_error(err)
        if message is None:
            raise  # a bug: the traceback is the report
        if debug:
            import traceback

            traceback.print_exc()
        print(f"pcrm {command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        from pcrm.console import release_console

        release_console()
    return 0


def _close_progress_bars() -> None:
    """Close the bars a failed run left open, so that the error line is the last line on the console."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


# Library modules whose ValueErrors reject an option value (TrainingArguments, the TRL configs, schedulers).
_OPTION_MODULES = ("training_args", "_config.py", "configuration_utils", "trainer_utils", "scheduler", "optimization")


def user_error(err: BaseException) -> str | None:
    """The one-line message of an error the user caused (bad input, file system), or None for a bug."""
    import errno as errno_codes

    from pcrm.outputs import is_enospc

    if isinstance(err, PcrmError):
        return str(err)
    if is_enospc(err) and not isinstance(err, OSError):  # torch's and safetensors' write errors are RuntimeErrors
        return "no space left on device while writing (free some space, then run again or --resume)"
    if isinstance(err, UnicodeDecodeError):
        return f"input is not UTF-8 text (invalid byte 0x{err.object[err.start]:02x})"
    if isinstance(err, OSError) and err.errno is not None:
        what = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        reason = err.strerror or errno_codes.errorcode.get(err.errno, str(err))
        if err.errno == errno_codes.ENOSPC:
            reason = "no space left on device (free some space, then run again or --resume)"
        return f"{what}: {reason}" if what else reason
    if isinstance(err, ValueError):
        import traceback

        frames = traceback.extract_tb(err.__traceback__)
        ours = os.path.dirname(os.path.abspath(__file__))
        library = [f.filename for f in frames if not f.filename.startswith(ours)]
        if (
            frames
            and not frames[-1].filename.startswith(ours)
            and any(m in f for f in library for m in _OPTION_MODULES)
        ):
            text = str(err).strip()
            return f"invalid option value: {text.splitlines()[0] if text else type(err).__name__}"
    return None


# Known warnings that say nothing to a pcrm user, matched by the start of their message (never a whole category).
NOISY_WARNINGS = (
    r"'pin_memory' argument is set as true but no accelerator is found",  # torch DataLoader on a CPU-only machine
    r"`is_gradient_checkpointing` is deprecated",  # transformers 5.24 calling its own deprecated name (TRL, PEFT)
)


def _quiet_libraries(verbose: bool = False) -> None:
    """`pcrm.console.quiet_libraries`, and the known warnings above ignored."""
    import warnings

    from pcrm.console import quiet_libraries

    for message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    quiet_libraries(verbose)


def main_entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
