"""pcrm (cached δ*, vectorised loss) vs a re-implementation of the paper authors' training procedure.

The authors' code (DeepSpeed-Chat-Extension, see docs/method.md) computes the cosine prior
inside every training step: the batch's chosen and rejected texts go through a frozen
bert-base-cased encoder (first-token embedding, L2-normalised), and the loss is summed in a
Python loop over the pairs (similarity, δ*, both ranking terms, per pair). The reference here
does the same inside pcrm's own trainer, so that only that differs: a bert-base-sized
`BertModel(BertConfig())` (12 layers, hidden 768; randomly initialised: the timing does not
depend on the weights, and no bert-base weights are available offline) encodes the batch's two
responses per pair at every step, then the per-pair loop. The responses are pre-tokenized once
(as the authors did) and padded to the batch's longest (`--ref-padding max_length` pads to 512
as the authors' data pipeline did; they also encoded prompt + response, so the default here is
the cheaper, conservative baseline). pcrm's trainer reads δ* from its precomputed column; the
one-time cost of that precomputation (fresh cache) is reported with the break-even step count.
"""

import math
import sys
from pathlib import Path

import benchlib
import torch
import torch.nn.functional as F

ENCODER_SIZES = {
    "base": {},
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
}


def reference_loss(rewards, embeddings, beta1: float, beta2: float, beta3: float):
    """The authors' way: per pair, in Python, similarity -> δ* -> both ranking terms; mean over pairs.

    `rewards` and `embeddings` hold the chosen rows, then the rejected ones. Returns (loss, δ* per pair).
    """
    bs = rewards.shape[0] // 2
    loss, deltas = 0.0, []
    for i in range(bs):
        with torch.no_grad():
            cosine = F.cosine_similarity(embeddings[i].unsqueeze(0), embeddings[i + bs].unsqueeze(0)).clamp(0, 1)
            similarity = (math.pi - torch.acos(cosine)) / math.pi
            delta = beta1 / (similarity + beta2) + beta3
        margin = rewards[i] - rewards[i + bs]
        loss = loss + (-F.logsigmoid(margin) - F.logsigmoid(delta - margin)).mean()
        deltas.append(delta)
    return loss / bs, torch.cat(deltas)


def reference_trainer_class():
    from pcrm.trainers.collators import DeltaCollator
    from pcrm.trainers.reward import PCRMRewardTrainer

    class ReferenceCollator(DeltaCollator):
        """pcrm's collator plus the encoder's token ids of both responses (chosen rows, then rejected)."""

        def __init__(self, pad_token_id, ref_pad_id=0, ref_pad_to=None):
            from trl.trainer.reward_trainer import DataCollatorForPreference

            super().__init__(DataCollatorForPreference(pad_token_id=pad_token_id))
            self.ref_pad_id, self.ref_pad_to = ref_pad_id, ref_pad_to

        def __call__(self, examples):
            batch = super().__call__(examples)
            ids = [e["ref_chosen_ids"] for e in examples] + [e["ref_rejected_ids"] for e in examples]
            width = self.ref_pad_to or max(len(x) for x in ids)
            batch["ref_input_ids"] = torch.tensor([x + [self.ref_pad_id] * (width - len(x)) for x in ids])
            batch["ref_attention_mask"] = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
            return batch

    class ReferenceProcedureTrainer(PCRMRewardTrainer):
        """PCRM with the cosine prior computed the authors' way: encoder at every step, loss in a per-pair loop."""

        def __init__(self, *args, encoder, beta1, beta2, beta3, **kwargs):
            self.encoder, self.betas = encoder.eval(), (beta1, beta2, beta3)
            super().__init__(*args, method="cosine", **kwargs)

        def _set_signature_columns_if_needed(self):
            if self._signature_columns is None:
                self._signature_columns = [
                    "chosen_ids",
                    "rejected_ids",
                    "ref_chosen_ids",
                    "ref_rejected_ids",
                    self.args.length_column_name,
                ]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mode = "train" if model.training else "eval"
            with torch.no_grad():
                hidden = self.encoder(
                    input_ids=inputs.pop("ref_input_ids"), attention_mask=inputs.pop("ref_attention_mask")
                )[0]
                embeddings = F.normalize(hidden[:, 0, :], p=2, dim=1)
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
            rewards = outputs.logits.squeeze(-1)
            bs = rewards.shape[0] // 2
            loss, delta = reference_loss(rewards, embeddings, *self.betas)
            chosen, rejected = rewards[:bs], rewards[bs:]
            margin = (chosen - rejected).detach()
            # the same per-step metrics as pcrm's trainer logs
            self._log_metrics(
                mode,
                chosen,
                rejected,
                delta,
                -F.logsigmoid(margin),
                -F.logsigmoid(delta - margin),
                torch.zeros_like(margin),
            )
            return (loss, outputs) if return_outputs else loss

    return ReferenceProcedureTrainer, ReferenceCollator


def build_reference(args, encoder_size: str):
    """The reference trainer over the same pairs, model, arguments and sampler as pcrm's."""
    from transformers import BertConfig, BertModel

    from pcrm.constraints import ConstraintConfig
    from pcrm.data import as_text
    from pcrm.models import load_tokenizer
    from pcrm.trainers.reward import JsonlLogger

    trainer_class, collator_class = reference_trainer_class()
    config = benchlib.bench_config(
        model=args.model,
        data=args.data,
        split=args.split,
        method="bt",
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_pairs=args.pairs,
    )
    bt, tokenizer, _ = benchlib.build_pcrm_trainer(
        config
    )  # model, arguments and tokenized pairs, built as pcrm builds them
    ref_tokenizer = load_tokenizer("minilm")  # the bert-base-uncased WordPiece vocabulary (30522), bert-base's size
    ref_tokenizer.truncation_side = "left"
    dataset = bt.train_dataset
    for column in ("chosen", "rejected"):
        texts = [as_text(x) for x in dataset[column]]
        dataset = dataset.add_column(
            f"ref_{column}_ids", ref_tokenizer(texts, truncation=True, max_length=512)["input_ids"]
        )
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=ref_tokenizer.vocab_size, **ENCODER_SIZES[encoder_size]))
    pcrm_defaults = ConstraintConfig(method="cosine")  # pcrm's default βs of the cosine prior
    trainer = trainer_class(
        model=bt.model,
        args=bt.args,
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=collator_class(
            pad_token_id=tokenizer.pad_token_id,
            ref_pad_id=ref_tokenizer.pad_token_id,
            ref_pad_to=512 if args.ref_padding == "max_length" else None,
        ),
        callbacks=[JsonlLogger(Path(config.output) / "train_log.jsonl")],
        encoder=encoder,
        beta1=pcrm_defaults.beta1,
        beta2=pcrm_defaults.beta2,
        beta3=pcrm_defaults.beta3,
    )
    return benchlib.instrument(trainer), sum(p.numel() for p in encoder.parameters())


def precompute_seconds(args) -> float:
    """pcrm's one-time cost for these pairs: the cosine prior with a fresh (empty) cache."""
    import os

    from pcrm.constraints import ConstraintConfig, timed_constraints
    from pcrm.data import load_preferences

    dataset = load_preferences(args.data, split=args.split)
    if args.pairs is not None and args.pairs < len(dataset):
        dataset = dataset.shuffle(seed=0).select(range(args.pairs))
    previous = os.environ.get("PCRM_CACHE")
    os.environ["PCRM_CACHE"] = str(benchlib.tempdir("cache"))
    try:
        return timed_constraints(dataset, ConstraintConfig(method="cosine", encoder=args.encoder), show_progress=False)[
            1
        ]["seconds"]
    finally:
        if previous is None:
            del os.environ["PCRM_CACHE"]
        else:
            os.environ["PCRM_CACHE"] = previous


def main(argv=None) -> dict:
    load_before = benchlib.start()
    p = benchlib.parser("vs_reference_procedure", __doc__, steps=4, pairs=256, repeats=2)
    p.add_argument("--encoder", default="minilm", help="pcrm's sentence encoder of the cosine prior")
    p.add_argument(
        "--encoder-size", default="base", choices=ENCODER_SIZES, help="size of the reference's per-step encoder"
    )
    p.add_argument(
        "--ref-padding", default="longest", choices=("longest", "max_length"), help="reference encoder's padding"
    )
    args = benchlib.parse(p, argv, steps=3, repeats=1, pairs=32, batch_size=2, max_length=32)

    config = benchlib.bench_config(
        model=args.model,
        data=args.data,
        split=args.split,
        method="cosine",
        encoder=args.encoder,
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_pairs=args.pairs,
    )
    trainers = {"pcrm": benchlib.build_pcrm_trainer(config)[0]}
    trainers["reference"], encoder_parameters = build_reference(args, args.encoder_size)
    runs, wall, cpu, shapes = benchlib.time_trainers(trainers, args.steps, args.repeats)
    precompute = precompute_seconds(args)

    med = {name: benchlib.median(v) for name, v in wall.items()}
    rows = [
        {
            "procedure": name,
            "step_s_median": med[name],
            "step_s_min": min(wall[name]),
            "cpu_s_median": benchlib.median(cpu[name]),
            "steps_timed": len(wall[name]),
            "slowdown_vs_pcrm": med[name] / med["pcrm"],
            "same_rm_batches": shapes[name] == shapes["pcrm"],
        }
        for name in trainers
    ]
    saved = med["reference"] - med["pcrm"]
    figures = {
        "step_time_ratio_reference_vs_pcrm": med["reference"] / med["pcrm"],
        "cpu_time_ratio_reference_vs_pcrm": benchlib.median(cpu["reference"]) / benchlib.median(cpu["pcrm"]),
        "pcrm_precompute_seconds_fresh_cache": precompute,
        "break_even_steps": precompute / saved if saved > 0 else None,
        "reference_encoder_parameters": encoder_parameters,
    }
    print(
        f"pcrm's one-time precomputation of δ* for {args.pairs} pairs (fresh cache): {precompute:.1f} s "
        f"= {figures['break_even_steps'] or float('nan'):.1f} steps of the reference's extra cost"
    )
    return benchlib.report(
        args,
        rows,
        figures,
        raw={"step_seconds": wall, "step_cpu_seconds": cpu, "batch_shapes": shapes},
        load_before=load_before,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
