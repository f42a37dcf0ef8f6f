"""The shipped accelerate configs are valid accelerate launch configs."""

from pathlib import Path

import pytest
import yaml

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "pcrm" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_accelerate_config_loads(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(path)
    assert config.distributed_type.value in {"DEEPSPEED", "FSDP"}
    assert yaml.safe_load(path.read_text())["mixed_precision"] == "bf16"


def test_zero_stages():
    stages = {p.name: yaml.safe_load(p.read_text()).get("deepspeed_config", {}).get("zero_stage") for p in CONFIGS}
    assert stages["zero2.yaml"] == 2 and stages["zero3.yaml"] == 3
