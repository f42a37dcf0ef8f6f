"""The tiny random models of `pcrm overoptimization --quick`: the whole study in seconds on a CPU (a smoke test)."""

from pathlib import Path


def build_tiny_models(root: str | Path) -> dict:
    """Tiny random models for `--quick` (seconds on a CPU): a BERT proxy backbone, a BERT gold RM and a Llama policy,
    all with the byte-level ByT5 tokenizer. Deterministic (seeded); built once under `root`."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    root = Path(root)
    paths = {name: root / name for name in ("proxy", "gold", "policy")}
    if all((p / "config.json").is_file() for p in paths.values()):
        return {k: str(v) for k, v in paths.items()}
    tokenizer = ByT5Tokenizer()
    bert = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        for name, seed in (("proxy", 0), ("gold", 1)):
            torch.manual_seed(seed)
            BertForSequenceClassification(BertConfig(**bert)).save_pretrained(paths[name])
            tokenizer.save_pretrained(paths[name])
        torch.manual_seed(2)
        llama = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=64,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        LlamaForCausalLM(llama).save_pretrained(paths["policy"])
        tokenizer.save_pretrained(paths["policy"])
    return {k: str(v) for k, v in paths.items()}
