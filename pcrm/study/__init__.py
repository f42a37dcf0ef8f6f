"""Reward over-optimisation with a synthetic gold reward (Gao, Schulman & Hilton 2022; Coste et al. 2024).

A fixed "gold" reward model stands in for human judgement. It labels comparison pairs with Bradley–Terry noise —
the bundled HH pairs (the off-policy arm) or pairs of the policy's own samples, cross-fitted by prompt folds (the
on-policy arm) — proxy reward models are trained on those labels with each loss over several seeds, and a policy's
samples are selected against each proxy by best-of-N and by the KL-regularised policy π_β ∝ π₀·exp(r/β). The gold
reward of the selections against KL from the policy shows whether, and how soon, optimising the proxy stops helping
the gold reward; Gao et al.'s gold(d) − gold(0) = d(α − βd), d = √KL, summarises each best-of-N curve by α
(initial slope) and β (over-optimisation).

One job per module:

    gold         the gold RM (SmolLM2-135M + LoRA, shipped in pcrm/data/gold-smollm2/) and `--gold` loading
    estimator    best-of-N on a pool (exact order statistics), Gao's fit, t-intervals over seeds
    labels       the labels stage: gold scores, Bradley–Terry label noise
    proxies      the proxies and scores stages: a reward model per (method, seed), its scores of the pool
    pool         the pool stage: pool files, sampling the policy, gold scores
    fit          the best-of-N and fit stages: curves and α, β per proxy and per method
    report       the report stage: plot, tables, findings text, report.html / report.md / summary.json
    stages       the study folder's cache (study.json) and `run_study`, all stages in order
    tiny_models  the tiny random models of `pcrm overoptimization --quick`
    policy       the KL-regularised policy π_β ∝ π₀·exp(r/β) on a pool: fixed β, the gold-vs-KL frontier
    inference    prompt-clustered paired bootstraps, random-selector null bands, the weighted Gao test
    power        power before the run (`python -m pcrm.study.power`: the power statement of a pool)
    findings     text claims only for the tests that pass (Holm over the family)
    analysis     `analyse`: all of the above for a dict of methods' scores against a baseline
    analysis_report  the report sections of an arm's analysis (figure, headline table, fixed β, Gao, pairs)
    onpolicy     the on-policy arm: pairs of the pool's samples labelled by the gold RM, proxies cross-fitted by
                 prompt folds, their scores of the prompts they never saw, the arm's analysis

Layout of a study folder (`pcrm overoptimization --output`):

    study.json               the settings that the cached outputs depend on (checked on resume)
    labels/                  train.jsonl (gold-labelled pairs for the proxies), test.jsonl (noiseless gold
                             order), test-human.jsonl, gold.npz (gold scores), summary.json
    proxies/METHOD-seedK/    reward-model directories (pcrm train-rm)
    pool/pool.jsonl          prompt, sample, response, gold: the shippable pool (`--pool FILE` reads one)
    scores/LABEL.npz         each proxy's scores of the pool and of the held-out pairs
    bestofn.json, fit.json   curves and fitted α, β per proxy and per method
    analysis.json            the off-policy arm's tests (`analysis.analyse`), pair accuracy and length bias
    onpolicy/                the on-policy arm: labels/, proxies/METHOD-seedK-foldF/, scores/, analysis.json
    report.html, report.md, summary.json, *.png

The stage functions take a `pcrm.study.config.StudyConfig` (the options of `pcrm overoptimization`).
"""
