"""`pcrm overoptimization`: the synthetic gold-reward over-optimisation study (library: `pcrm.study`; options:
`pcrm.study.config.StudyConfig`)."""

import os
from dataclasses import asdict

from pcrm.study.config import FULL_METHODS, QUICK_METHODS, QUICK_SIZES, StudyConfig  # noqa: F401 (re-exported)

Config = StudyConfig


def run(config: Config) -> dict:
    """Under `pcrm.outputs.OutputFolder` (lock, marker; a rerun continues this command's own study, its stages keyed
    on the settings in study.json); every check before the first write."""
    from pcrm.io import versions
    from pcrm.outputs import OutputFolder
    from pcrm.preflight import check_device
    from pcrm.study.stages import check_study, run_study
    from pcrm.study.tiny_models import build_tiny_models

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    check_device(config.device)
    folder = OutputFolder(config.output, "overoptimization", rerun="continue", resumable=lambda work: True)
    out = folder.plan()
    tiny = out / "tiny-models"
    if config.quick:
        config.gold, config.proxy_model, config.policy = (str(tiny / name) for name in ("gold", "proxy", "policy"))
    check_study(config, out, write=False)
    with folder:
        if config.quick:
            build_tiny_models(tiny)
        summary = run_study(config)
        folder.commit({"kind": "overoptimization", "config": asdict(config), "versions": versions()})
    return summary
