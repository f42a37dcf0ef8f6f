"""Turn (prompt, response) into token ids the same way for training and for scoring.

Long sequences are truncated from the left (the prompt's start), keeping the special
tokens and the response, whose last token is where a reward model reads its score.
Nothing is dropped silently: callers get the count of truncated sequences.
"""

from datasets import Dataset

TURN = "\n\nHuman:"  # a text prompt's next user turn: where a response to an HH-style prompt ends


def render(prompt, response, tokenizer) -> str:
    """The text a reward model reads: prompt + response, through the chat template when conversational.

    Inside a chat template, special-token strings in the messages' content are broken with a zero-width space
    (`escape_special_tokens`), so data cannot forge the template's structure."""
    if isinstance(response, list):
        messages = (
            prompt if isinstance(prompt, list) else ([{"role": "user", "content": prompt}] if prompt else [])
        ) + response
        if uses_chat_template(tokenizer):
            messages = [{**m, "content": escape_special_tokens(m["content"], tokenizer)} for m in messages]
            return tokenizer.apply_chat_template(messages, tokenize=False)
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
    if isinstance(prompt, list):
        prompt = render([], prompt, tokenizer)
    return prompt + response


def uses_chat_template(tokenizer) -> bool:
    """Whether conversations are rendered with the tokenizer's own chat template (not pcrm's plain one)."""
    from pcrm.models import CHAT_TEMPLATE

    template = getattr(tokenizer, "chat_template", None)
    return bool(template) and template != CHAT_TEMPLATE


def splits_special_tokens(tokenizer, responses) -> bool:
    """Whether texts rendered from `responses` are tokenized with special-token strings split into plain text.

    True for text data (data never becomes [SEP] or <|im_start|>); False for conversations rendered with the
    tokenizer's own chat template, whose special tokens are real (their content is escaped by `render`)."""
    conversational = bool(len(responses)) and isinstance(responses[0], list)
    return not (conversational and uses_chat_template(tokenizer))


def escape_special_tokens(text: str, tokenizer) -> str:
    """`text` with every special-token string broken by a zero-width space after its first character."""
    for token in special_token_strings(tokenizer):
        if token in text:
            text = text.replace(token, token[0] + "\u200b" + token[1:])
    return text


def special_token_strings(tokenizer) -> list[str]:
    added = [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special]
    return sorted({t for t in [*tokenizer.all_special_tokens, *added] if len(t) > 1}, key=len, reverse=True)


def tokenize(
    tokenizer, texts: list[str], max_length: int | None, split_special_tokens: bool = True
) -> tuple[list[list[int]], list[bool]]:
    """Token ids of `texts` (special tokens added around them; special-token strings inside them split into plain
    text unless `split_special_tokens=False`), left-truncated to `max_length`, and which of them were truncated."""
    ids = tokenizer(texts, split_special_tokens=split_special_tokens)["input_ids"]
    truncated = [max_length is not None and len(x) > max_length for x in ids]
    long_rows = [i for i, t in enumerate(truncated) if t]
    if long_rows:
        side = tokenizer.truncation_side
        tokenizer.truncation_side = "left"  # special tokens are kept; the prompt's start is cut
        try:
            short = tokenizer(
                [texts[i] for i in long_rows],
                truncation=True,
                max_length=max_length,
                split_special_tokens=split_special_tokens,
            )["input_ids"]
        finally:
            tokenizer.truncation_side = side
        for i, row in zip(long_rows, short):
            ids[i] = row
    return ids, truncated


def render_pairs(dataset: Dataset, tokenizer) -> tuple[list[str], list[str]]:
    """Rendered chosen and rejected texts of every pair."""
    prompts = dataset["prompt"] if "prompt" in dataset.column_names else [""] * len(dataset)
    chosen = [render(p, r, tokenizer) for p, r in zip(prompts, dataset["chosen"])]
    rejected = [render(p, r, tokenizer) for p, r in zip(prompts, dataset["rejected"])]
    return chosen, rejected


def tokenize_pairs(dataset: Dataset, tokenizer, max_length: int | None) -> tuple[Dataset, int]:
    """Add `chosen_ids`/`rejected_ids` (TRL's tokenized columns); return the dataset and the truncated-pair count."""
    chosen, rejected = render_pairs(dataset, tokenizer)
    split = splits_special_tokens(tokenizer, dataset["chosen"][:1])
    chosen_ids, chosen_cut = tokenize(tokenizer, chosen, max_length, split)
    rejected_ids, rejected_cut = tokenize(tokenizer, rejected, max_length, split)
    for column in ("chosen_ids", "rejected_ids"):
        if column in dataset.column_names:
            dataset = dataset.remove_columns(column)
    dataset = dataset.add_column("chosen_ids", chosen_ids).add_column("rejected_ids", rejected_ids)
    return dataset, sum(a or b for a, b in zip(chosen_cut, rejected_cut))


def cut_prompts(prompts: list, tokenizer, max_tokens: int) -> tuple[list, int]:
    """Text prompts longer than `max_tokens` tokens cut from the left (the last turns stay), and how many were cut.

    Conversational prompts are returned as they are (TRL's chat template and `max_length` apply).
    """
    if not prompts or not isinstance(prompts[0], str):
        return prompts, 0
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    long_rows = [i for i, row in enumerate(ids) if len(row) > max_tokens]
    prompts = list(prompts)
    for i in long_rows:
        prompts[i] = tokenizer.decode(ids[i][-max_tokens:])
    return prompts, len(long_rows)
