"""`distinfer model make-tiny DIR`: a random tiny Llama with a tokenizer trained here, fully offline.

The weights are random (the text is gibberish); what matters is that it is a real transformers
model and tokenizer pair with a chat template, loading with AutoModelForCausalLM / AutoTokenizer
in well under a second, so the whole serving path can be exercised on a CPU in tests and demos.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from distinfer.models.folder import write_once

log = logging.getLogger(__name__)

KIND = "tiny-llama"

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# A small corpus of words for the tokenizer (no download): the guide's own vocabulary.
_CORPUS = """
Ray Serve deploys a large language model across GPU servers with tensor parallel replicas.
The benchmark sends prompts of fourteen to forty tokens and asks for two hundred fifty six tokens.
Requests per second, token throughput, time to first token and latency grow with the cluster.
Each node reports its CPU, memory, GPU utilisation and network traffic while the load runs.
Kubernetes, Helm, the GPU Operator and KubeRay install the serving stack on bare metal servers.
Hello, how are you today? Tell me a story about a cat, a dog and a robot who learn to cook.
What is the capital of France? Explain quantum computing in simple words for a child.
"""


def train_tokenizer(vocab_size: int = 512) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    lines = [line for line in _CORPUS.splitlines() if line.strip()]
    tok.train_from_iterator(lines * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny(directory: Path, layers: int = 2, hidden: int = 64, max_len: int = 512, seed: int = 0) -> Path:
    """Write a random tiny Llama and its tokenizer into `directory` once (atomically).

    A folder that already holds a complete tiny model is kept as it is (same seed, same weights).
    """

    def write(out: Path) -> dict[str, Any]:
        _write_tiny(out, layers=layers, hidden=hidden, max_len=max_len, seed=seed)
        return {"layers": layers, "hidden": hidden, "max_len": max_len, "seed": seed}

    write_once(Path(directory), KIND, write)
    return Path(directory)


def _write_tiny(directory: Path, layers: int, hidden: int, max_len: int, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_len,
        bos_token_id=tokenizer.bos_token_id,  # type: ignore[attr-defined]
        eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
        pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)  # type: ignore[attr-defined]
    log.info("tiny Llama (%d layers, hidden %d) written to %s", layers, hidden, directory)
