"""The gold-reward study that can tell whether PCRM helps (issue 22; docs/study-design.md in the shared notes).

`pcrm.study.statistics` holds its estimators and tests as pure numpy/scipy functions: the KL-regularised policy on a
sample pool, prompt-clustered paired bootstraps, random-selector null bands, the weighted Gao fit with its test, the
power analysis, length bias, and a findings generator that states only what passed its test. The stages that train
and score (`pcrm.overoptimization`) are not here.
"""
