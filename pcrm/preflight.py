"""Checks that only read, run before a command writes its first file: options, models, tokenizers, devices.

Every check raises `PcrmError` (one line naming the option or file) and changes nothing, so a command that runs
them first either fails at once or starts its work with inputs known to be usable.
"""

import dataclasses
import json
import math
import os
import types
import typing
from pathlib import Path

from pcrm.errors import PcrmError

# -- options ----------------------------------------------------------------------------------------


def option_name(name: str, prefix: str = "--") -> str:
    return prefix + name.replace("_", "-")


def check_types(config, option_prefix: str = "--") -> None:
    """Every option of `config` of its declared type (a library caller's "4" for an int, "false" for a bool, one
    string for a list): refused with one line. An int passes for a float, a path for a str."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, hint = getattr(config, f.name), hints.get(f.name, typing.Any)
        if not dataclasses.is_dataclass(value) and not _is_a(value, hint):
            name = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            raise PcrmError(f"{option_name(f.name, option_prefix)} must be {name}, got {value!r}")


def _is_a(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_is_a(v, args[0]) for v in value if args)
    if hint in (int, float):  # bool is an int to Python, not to a user
        return isinstance(value, int if hint is int else (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, (str, os.PathLike))
    return not isinstance(hint, type) or isinstance(value, hint)


def check_numbers(config, option_prefix: str = "--") -> None:
    """Every option of its type (`check_types`); every float option (nested dataclasses included) finite; every
    `seed` >= 0."""
    check_types(config, option_prefix)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            check_numbers(value, option_prefix)
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        option = option_name(f.name, option_prefix)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise PcrmError(f"{option} must be a finite number, got {v}")
        if f.name == "seed" and isinstance(value, int) and value < 0:
            raise PcrmError(f"{option} must be >= 0, got {value}")


def check_at_least(config, minimum: float, *names: str) -> None:
    """Each option `names` of `config` (None: unset, allowed) >= `minimum`."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not value >= minimum:
            raise PcrmError(f"{option_name(name)} must be >= {minimum:g}, got {value}")


def check_positive(config, *names: str) -> None:
    """Each option `names` of `config` (None: unset, allowed) a number > 0."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise PcrmError(f"{option_name(name)} must be > 0, got {value}")


def check_scheduler(name: str) -> None:
    from transformers import SchedulerType

    names = [s.value for s in SchedulerType]
    if name not in names:
        raise PcrmError(f"--scheduler must be one of {', '.join(names)}, got {name!r}")


def check_device(device: str, option: str = "--device") -> None:
    """`auto`, or a torch device that exists on this machine (`cuda` without a GPU is refused here, not mid-run)."""
    import torch

    if device == "auto":
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise PcrmError(f"{option} {device!r}: not a device (auto, cpu, cuda, cuda:N, mps)") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(parsed.type):
        raise PcrmError(f"{option} {device}: no such device on this machine (use auto or cpu)")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise PcrmError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


# -- models -------------------------------------------------------------------------------------------


def model_config(name: str):
    """The transformers config of a model name, directory or Hub id (one line if unreadable)."""
    from transformers import AutoConfig

    from pcrm.models import hub_kwargs, resolve_model

    path = resolve_model(name)
    try:
        return AutoConfig.from_pretrained(path, **hub_kwargs(path))  # Hub unreachable: the cache, at once
    except (OSError, ValueError, KeyError) as err:
        raise PcrmError(f"{name}: cannot read the model config ({str(err).splitlines()[0]})") from None


def model_length_limit(name: str) -> int | None:
    """The longest input a model accepts (position embeddings, else a sensible tokenizer limit); None if unknown."""
    from pcrm.models import resolve_model

    limits = []
    config = model_config(name)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
            break
    tokenizer_config = Path(resolve_model(name)) / "tokenizer_config.json"
    if tokenizer_config.is_file():
        try:
            value = json.loads(tokenizer_config.read_text(encoding="utf-8")).get("model_max_length")
        except (OSError, ValueError, AttributeError):
            value = None
        if isinstance(value, int) and 0 < value < 1_000_000:
            limits.append(value)
    return min(limits) if limits else None


def check_max_length(name: str, max_length: int | None, option: str = "--max-length") -> None:
    limit = model_length_limit(name) if max_length is not None else None
    if limit is not None and max_length > limit:
        raise PcrmError(f"{option} {max_length} is above the limit of {name} ({limit} tokens)")


def check_backbone(name: str) -> None:
    """A train-rm backbone: a sequence classifier must have exactly one label (with 2 it is a classifier, not an RM)."""
    config = model_config(name)
    architectures = config.architectures or []
    if any(a.endswith("ForSequenceClassification") for a in architectures) and config.num_labels != 1:
        raise PcrmError(
            f"{name}: a sequence classifier with {config.num_labels} labels, not a reward model "
            "(need 1 label, or a base model without a classification head)"
        )


CAUSAL_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def check_causal_lm(name: str, option: str = "--policy") -> None:
    """A policy: a causal language model (a reward model or an encoder would be given a random LM head)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = model_config(name)
    architectures = config.architectures or []
    if architectures:
        causal = any(a.endswith(CAUSAL_HEADS) for a in architectures)
    else:  # a config without architectures: what AutoModelForCausalLM would build for its type
        causal = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if not causal:
        found = ", ".join(architectures) or config.model_type
        raise PcrmError(f"{option} {name}: not a causal language model ({found}); a policy needs a *ForCausalLM model")


def check_tokenizer(name: str) -> None:
    """The model's tokenizer loads and can pad (a pad, eos or sep token): batches need one."""
    from pcrm.models import load_tokenizer

    tokenizer = load_tokenizer(name)
    if tokenizer.pad_token is None or tokenizer.pad_token_id is None:
        raise PcrmError(
            f"{name}: its tokenizer has no pad, eos or sep token to pad batches with "
            "(set pad_token in tokenizer_config.json)"
        )


def check_model_files(name: str) -> None:
    """Weight files of a local model directory readable (a truncated safetensors file fails here, not mid-run)."""
    from pcrm.models import resolve_model

    path = Path(resolve_model(name))
    if not path.is_dir():
        return
    from safetensors import SafetensorError, safe_open

    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(file, "pt"):  # reads the header and checks that the data covers the file exactly
                pass
        except (SafetensorError, OSError):
            raise PcrmError(f"{file}: truncated or not a safetensors file") from None


def check_model(
    name: str, kind: str, max_length: int | None = None, option: str = "--model", length_option: str = "--max-length"
) -> None:
    """Every check of a model given as `option`: its kind (`reward` or `causal`), length limit, weights, tokenizer."""
    from pcrm.models import check_reward_model

    check_model_files(name)
    if kind == "reward":
        check_reward_model(name)
    else:
        check_causal_lm(name, option)
    check_max_length(name, max_length, length_option)
    check_tokenizer(name)


def check_report_dir(path: str, option: str = "--report") -> None:
    """A folder a report section can be added to, checked before the run (not after it): a `pcrm evaluate` folder, or
    an empty or absent one (then created) under a writable parent."""
    folder = Path(path)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    if existing == folder and folder.is_dir() and any(folder.iterdir()) and not (folder / "metrics.json").is_file():
        raise PcrmError(f"{option} {path}: not a pcrm evaluate folder (no metrics.json)")
    if not existing.is_dir():
        raise PcrmError(f"{option} {path}: {existing} is not a directory")
    for writable in (existing, folder / "sections"):
        if writable.exists() and not (writable.is_dir() and os.access(writable, os.W_OK | os.X_OK)):
            raise PcrmError(f"{option} {path}: {writable} is not a writable directory")
