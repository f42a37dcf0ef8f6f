"""A TRL reward-model script, made a PCRM script.

The TRL original (https://huggingface.co/docs/trl/reward_trainer) differs in three lines, marked `# PCRM`:
the import, the constraints added to the dataset, and the config/trainer classes. Everything else is TRL's.

    python examples/trl_script.py --model_name_or_path ./my-backbone --dataset_name pairs.jsonl --output_dir runs/trl
"""

import argparse

from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pcrm import ConstraintConfig, PCRMRewardConfig, PCRMRewardTrainer, add_constraints  # PCRM


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model_name_or_path", required=True)
    parser.add_argument("--dataset_name", required=True, help="a JSON/JSONL file with prompt, chosen, rejected")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--method", default="length", help="prior of δ*: length or cosine")
    parser.add_argument("--max_steps", type=int, default=-1)
    args = parser.parse_args(argv)

    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(args.model_name_or_path, num_labels=1)
    dataset = load_dataset("json", data_files=args.dataset_name, split="train")
    dataset = add_constraints(dataset, ConstraintConfig(method=args.method), tokenizer)  # PCRM: each pair's δ*

    training_args = PCRMRewardConfig(
        output_dir=args.output_dir,
        method=args.method,
        max_steps=args.max_steps,  # PCRM
        per_device_train_batch_size=4,
        max_length=128,
        report_to=[],
        use_cpu=True,
    )
    trainer = PCRMRewardTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(args.output_dir)
    return trainer


if __name__ == "__main__":
    main()
