"""Print the README's "same score in every client" table from a run of tests/test_parity.py:

PCRM_PARITY_TABLE=/tmp/parity.json .venv/bin/python -m pytest -q tests/test_parity.py
.venv/bin/python scripts/parity_table.py /tmp/parity.json
"""

import json
import sys

MODELS = {
    "minilm": "MiniLM (bundled)",
    "bert": "tiny BERT",
    "llama": "tiny Llama",
    "llama-lora": "tiny Llama, LoRA merged",
}


def main(path: str) -> None:
    measured = json.loads(open(path, encoding="utf-8").read())
    clients = list(dict.fromkeys(key.split("|", 1)[1] for key in measured))
    models = [m for m in MODELS if any(key.startswith(m + "|") for key in measured)]
    print("| client | " + " | ".join(MODELS[m] for m in models) + " |")
    print("|---" * (len(models) + 1) + "|")
    for client in clients:
        cells = [measured.get(f"{m}|{client}") for m in models]
        print(f"| {client} | " + " | ".join("—" if c is None else f"{c:.1e}" for c in cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
