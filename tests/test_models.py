"""Model resolution and loading: bundled names, Hub ids online/offline (no HF_* variable set by pcrm), devices."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pcrm.models as models
from pcrm.errors import PcrmError

MISSING = "pcrm-tests/no-such-model-anywhere"


def test_product_code_sets_no_hf_variable():
    for path in Path(models.__file__).parent.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"environ(\.setdefault\(|\[)\s*['\"](HF_|TRANSFORMERS_OFFLINE)", text), path
        assert not re.search(r"local_files_only=True[,)]", text), path  # only while the Hub is unreachable


@pytest.fixture
def unreachable_hub(monkeypatch):
    """No HF_HUB_OFFLINE from the user, and a Hub that does not answer."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models, "hub_reachable", lambda: False)


def test_uncached_hub_id_offline_fails_fast_in_one_line(unreachable_hub):
    assert models.hub_kwargs(MISSING) == {"local_files_only": True}
    assert models.hub_kwargs(models.resolve_model("minilm")) == {}  # bundled: never the network
    for load in (models.load_tokenizer, models.load_reward_model, models.check_reward_model):
        start = time.perf_counter()
        with pytest.raises(PcrmError) as err:
            load(MISSING)
        assert time.perf_counter() - start < 10
        message = str(err.value)
        assert message.startswith(MISSING) and "unreachable" in message and "\n" not in message


def test_user_offline_flag_is_honoured(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "hub_reachable", lambda: pytest.fail("no probe when the user set HF_HUB_OFFLINE"))
    assert models.hub_kwargs(MISSING) == {}  # huggingface_hub itself serves the cache
    with pytest.raises(PcrmError, match="HF_HUB_OFFLINE is set and the model is not in the local cache"):
        models.load_tokenizer(MISSING)


def test_hub_probe_is_quick():
    models.hub_reachable.cache_clear()
    start = time.perf_counter()
    assert models.hub_reachable(timeout=1.0) in (True, False)
    assert time.perf_counter() - start < 2.5
    models.hub_reachable.cache_clear()


def test_cli_offline_error(tmp_path):
    """`pcrm train-rm --model <uncached Hub id>` without HF_HUB_OFFLINE: exit 2, one line naming the id."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HUB_ETAG_TIMEOUT"] = env["HF_HUB_DOWNLOAD_TIMEOUT"] = "5"  # when online, the Hub answers 404 anyway
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pcrm.cli", "train-rm", "--model", MISSING, "--output", str(tmp_path / "rm")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and MISSING in lines[0], done.stderr
    assert seconds < 60  # < 10 s plus interpreter start-up on a loaded machine; measured in the report


def test_devices_and_scoring_dtype():
    assert models.default_device("cpu") == "cpu"
    assert models.default_device("auto") in ("cpu", "cuda", "mps")
    assert models.scoring_dtype("cpu") == "float32"
    assert models.scoring_dtype("mps") == "float32"


def test_device_option_on_commands():
    from pcrm.commands import align, constraints, evaluate, evaluate_policy

    for module in (constraints, evaluate, evaluate_policy, align):
        fields = {f.name: f for f in module.Config.__dataclass_fields__.values()}
        assert fields["device"].default == "auto", module.__name__


def test_encoder_on_the_requested_device():
    encoder = models.load_encoder("minilm", "cpu")
    assert str(encoder.device) == "cpu"


def test_save_reward_model_sets_client_defaults(tiny_rm_dir, tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    model, tokenizer = models.load_reward_model(tiny_rm_dir), models.load_tokenizer(tiny_rm_dir)
    before = tokenizer.model_max_length
    models.save_reward_model(model, tokenizer, tmp_path / "rm", max_length=64)
    assert tokenizer.model_max_length == before  # the in-memory tokenizer keeps its limit
    assert AutoConfig.from_pretrained(tmp_path / "rm").problem_type == "regression"
    saved = AutoTokenizer.from_pretrained(tmp_path / "rm")
    assert (saved.truncation_side, saved.padding_side, saved.model_max_length) == ("left", "right", 64)
    assert saved.chat_template == models.CHAT_TEMPLATE


def test_cli_filters_only_known_warnings():
    import warnings

    from pcrm.cli import NOISY_WARNINGS, _quiet_libraries

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _quiet_libraries()
        warnings.warn(
            "'pin_memory' argument is set as true but no accelerator is found, then device pinned memory won't be used."
        )
        warnings.warn("some other user warning")
        warnings.warn("a deprecation", DeprecationWarning)
    from pcrm.console import release_console

    release_console()
    assert [str(w.message) for w in caught] == ["some other user warning", "a deprecation"]
    assert NOISY_WARNINGS
