"""The `pcrm` command line: one subcommand per task, each driven by one config dataclass.

Options are generated from the dataclass fields (`--field-name`, help from the field's
metadata), so the CLI and the Python API share one definition. User errors print one
line and exit with status 2.
"""

import argparse
import dataclasses
import importlib
import os
import sys
import types
import typing

from pcrm.errors import PcrmError

# name -> (module, help). Each module has `Config` (a dataclass) and `run(config) -> dict`.
COMMANDS = {
    "constraints": ("pcrm.commands.constraints", "compute, cache and summarise the prior constraints of a dataset"),
    "train-rm": ("pcrm.trainers.reward", "train a reward model with the ranking loss or PCRM"),
    "evaluate": ("pcrm.evaluation.command", "evaluate reward models: accuracy, rank correlation, scale, calibration"),
    "report": ("pcrm.report", "write the HTML/Markdown report comparing reward models"),
    "train-dpo": ("pcrm.alignment.dpo", "align a policy with DPO (or IPO/hinge), with or without PCRM"),
    "evaluate-policy": ("pcrm.alignment.policy_eval", "judge aligned policies: implicit rewards and judge win rates"),
    "align": ("pcrm.alignment.command", "best-of-N, PPO, RLOO or GRPO against a trained reward model"),
    "reproduce": ("pcrm.reproduce", "reproduce the paper's comparison on the bundled data"),
}


def _unwrap_optional(annotation):
    """`X | None` -> (X, True); anything else -> (annotation, False)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def add_config_arguments(parser: argparse.ArgumentParser, config_class) -> None:
    """Add one `--option` per dataclass field of `config_class`."""
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        kind, optional = _unwrap_optional(hints[field.name])
        option = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        kwargs = {"dest": field.name, "default": default, "help": help_text if "default" in help_text else f"{help_text} (default: {default})"}
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        if kind is bool:
            parser.add_argument(option, action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            kwargs["default"] = None  # argparse would append to a default list
            parser.add_argument(option, action="append", type=item, metavar=item.__name__.upper(), **kwargs)
        else:
            parser.add_argument(option, type=kind, metavar=kind.__name__.upper(), **kwargs)


def config_from_args(config_class, args: argparse.Namespace):
    values = {}
    for field in dataclasses.fields(config_class):
        value = getattr(args, field.name)
        if value is None and field.default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
        values[field.name] = value
    return config_class(**values)


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the `selected` command's module is imported (the others stay cheap)."""
    from pcrm import __version__

    parser = argparse.ArgumentParser(prog="pcrm", description="Reward models and policies trained with prior constraints (PCRM).")
    parser.add_argument("--version", action="version", version=f"pcrm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if name != selected:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=(module.Config.__doc__ or help_text).strip())
        add_config_arguments(command, module.Config)
        command.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(next((a for a in argv if a in COMMANDS), None))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _quiet_libraries()
    try:
        config = config_from_args(args._module.Config, args)
        args._module.run(config)
    except PcrmError as err:
        print(f"pcrm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pcrm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def _quiet_libraries() -> None:
    import logging
    import warnings

    logging.basicConfig(format="pcrm: %(message)s", level=logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def main_entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
