"""Write the prompts of the `smollm2-constraints` recipe: everyday requests crossed with
IFEval-style constraint sets (rewards/constraints.py), each row's instructions written out in
the request's text and listed as `{kind, ...}` dicts in its `constraints` column.

- constraints.jsonl: 720 rows; each row has 1 or 2 constraints of KINDS (every single kind and
  every pair). The recipe holds out a share of it (data.eval_fraction) with the same kinds.
- constraints-unseen.jsonl: 120 rows from requests that file never uses, each with 3
  constraints: a set of kinds no row of constraints.jsonl has.

Each row also has an `on_topic` column: one `include_any` constraint listing the words an
answer on the request's topic likely uses. No reward of the recipe reads it; its evaluation
does, as a second opinion (an answer that meets its instructions but says nothing about the
request fails it).

Seeded, so running it again writes the same files:

    python benchmarks/make_constraints_data.py [--out src/rewardtune/data/prompt_sets]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src/rewardtune/data/prompt_sets"
SEED = 21
N_TRAIN, N_UNSEEN = 720, 120

# (request, topical words one of which an `include` constraint may ask for)
REQUESTS = [
    ("How do I keep a houseplant alive?", ["water", "light", "soil"]),
    ("Give me a tip for sleeping better.", ["bed", "night", "screen"]),
    ("How can I save money on groceries?", ["list", "budget", "store"]),
    ("What should I pack for a weekend camping trip?", ["tent", "water", "jacket"]),
    ("How do I make a good cup of coffee?", ["beans", "water", "grind"]),
    ("Suggest a way to stay focused while studying.", ["break", "phone", "notes"]),
    ("How do I clean a cast iron pan?", ["oil", "water", "salt"]),
    ("What is a good way to start running?", ["shoes", "pace", "walk"]),
    ("How can I be more productive in the morning?", ["plan", "water", "alarm"]),
    ("Give me an idea for a rainy day with kids.", ["game", "paper", "blanket"]),
    ("How do I write a polite email to my landlord?", ["repair", "thanks", "date"]),
    ("What should I cook for a quick weeknight dinner?", ["pasta", "eggs", "rice"]),
    ("How do I prepare for a job interview?", ["company", "questions", "practice"]),
    ("Describe a simple way to reduce stress.", ["breathe", "walk", "music"]),
    ("How can I make my small apartment feel bigger?", ["mirror", "light", "storage"]),
    ("What is a good gift for a friend who loves books?", ["bookmark", "novel", "lamp"]),
    ("How do I teach my dog to sit?", ["treat", "reward", "patience"]),
    ("Give me advice for a first day at a new job.", ["names", "questions", "early"]),
    ("How should I store fresh herbs?", ["water", "fridge", "towel"]),
    ("How do I fix a squeaky door?", ["hinge", "oil", "screw"]),
    ("What can I do to drink more water?", ["bottle", "lemon", "reminder"]),
    ("How do I make friends in a new city?", ["club", "class", "neighbors"]),
    ("Suggest a healthy snack for work.", ["nuts", "fruit", "yogurt"]),
    ("How do I plan a birthday party on a budget?", ["cake", "games", "friends"]),
    ("How can I learn a new language faster?", ["words", "practice", "music"]),
    ("What is the best way to wash a wool sweater?", ["cold", "hands", "flat"]),
    ("How do I get better at remembering names?", ["repeat", "face", "notes"]),
    ("Give me a tip for taking better phone photos.", ["light", "lens", "angle"]),
    ("How should I prepare for a long flight?", ["water", "snacks", "pillow"]),
    ("How do I keep my kitchen tidy?", ["dishes", "counter", "trash"]),
    ("What is a good way to spend a lazy Sunday?", ["book", "walk", "nap"]),
    ("How can I stop procrastinating?", ["timer", "list", "start"]),
    ("How do I pick a ripe avocado?", ["color", "soft", "stem"]),
    ("Give me advice for riding a bike in the city.", ["helmet", "lights", "lane"]),
    ("How do I write a thank you note?", ["gift", "thanks", "name"]),
    ("What should I do if my phone battery dies fast?", ["brightness", "apps", "charger"]),
    ("How do I start a vegetable garden?", ["soil", "seeds", "sun"]),
    ("How can I keep my cat entertained indoors?", ["toys", "window", "box"]),
    ("How do I make a simple budget?", ["income", "expenses", "savings"]),
    ("Suggest a fun activity for a date night at home.", ["movie", "dinner", "games"]),
    ("How do I get rid of fruit flies?", ["vinegar", "trap", "fruit"]),
    ("What is a good morning stretching routine?", ["neck", "back", "breathe"]),
    ("How can I be a better listener?", ["eyes", "questions", "phone"]),
    ("How do I choose a good watermelon?", ["spot", "heavy", "sound"]),
    ("Give me a tip for keeping my car clean.", ["trash", "mats", "vacuum"]),
    ("How should I organize my closet?", ["hangers", "season", "boxes"]),
    ("How do I make my bread rise better?", ["yeast", "warm", "time"]),
    ("What can I do on a long train ride?", ["book", "music", "window"]),
    ("How do I apologize to a friend?", ["sorry", "listen", "time"]),
    ("How can I use less plastic at home?", ["bags", "bottle", "jars"]),
    ("How do I prepare for a hiking trip?", ["boots", "map", "water"]),
    ("Give me advice for cooking rice.", ["water", "pot", "salt"]),
    ("How do I keep my plants safe in winter?", ["cold", "window", "water"]),
    ("What is a good way to learn to cook?", ["recipes", "knife", "practice"]),
    ("How can I make my commute more pleasant?", ["music", "podcast", "book"]),
    ("How do I get my kids to eat vegetables?", ["dip", "garden", "colors"]),
    ("How should I care for leather shoes?", ["polish", "brush", "rain"]),
    ("Give me a tip for public speaking.", ["practice", "breathe", "notes"]),
    ("How do I choose a good book to read?", ["reviews", "library", "genre"]),
    ("How do I decorate a room cheaply?", ["plants", "paint", "frames"]),
]
# requests only the unseen set uses
UNSEEN_REQUESTS = [
    ("How do I make a paper airplane fly farther?", ["wings", "fold", "throw"]),
    ("How can I keep my desk organized?", ["drawer", "papers", "cables"]),
    ("Give me a tip for baking cookies.", ["butter", "oven", "sugar"]),
    ("How do I help a friend who is moving?", ["boxes", "truck", "food"]),
    ("What should I bring to a picnic?", ["blanket", "sandwiches", "drinks"]),
    ("How do I take care of a goldfish?", ["tank", "food", "water"]),
    ("How can I warm up my cold bedroom?", ["blanket", "curtains", "heater"]),
    ("Suggest a way to celebrate a small win.", ["treat", "friends", "walk"]),
    ("How do I pick a good pair of sunglasses?", ["frame", "lenses", "face"]),
    ("How should I prepare for a snowstorm?", ["food", "batteries", "water"]),
    ("How can I spend less time on my phone?", ["apps", "timer", "book"]),
    ("How do I cheer up a sad friend?", ["listen", "walk", "food"]),
]

EXCLUDED = ["very", "really", "just", "also", "important", "great", "make", "sure"]
# stock phrases to start or end with: a dozen each, so that following the instruction means
# copying the phrase from the request, and the answers do not all share five openings
STARTS = [
    "Sure thing",
    "Here is my advice",
    "Good question",
    "Okay so",
    "In short",
    "Happy to help",
    "Great idea",
    "Well then",
    "Simply put",
    "My tip",
    "Try this",
    "First of all",
]
ENDS = [
    "Hope this helps.",
    "Good luck!",
    "That is all.",
    "Have a nice day.",
    "Enjoy!",
    "Have fun!",
    "Take care.",
    "You can do it!",
    "Cheers!",
    "Best wishes.",
    "Stay safe.",
    "See you soon.",
]
# words of a request that say nothing of its topic (the rest, five letters or more, do)
STOP = {
    "should",
    "about",
    "there",
    "which",
    "would",
    "could",
    "better",
    "something",
    "while",
    "really",
    "where",
    "first",
    "other",
    "their",
    "these",
    "those",
    "without",
    "every",
}
# The kinds the prompts use: those the base model mostly fails and can learn (docs/constraints.md
# has its rate per kind). `sentences` and `exclude` are left out: the base model already meets
# them in 85% of its answers, so they would only pad the share met. constraint() still writes
# them, for anyone who wants them back.
KINDS = ["lowercase", "no_commas", "words", "include", "starts_with", "ends_with"]


def constraint(kind: str, topic: list[str], rng: random.Random) -> tuple[dict, str]:
    """One constraint of ``kind`` with drawn parameters, and its instruction in words."""
    if kind == "lowercase":
        return {"kind": kind}, "Write your whole answer in lowercase letters, with no capitals."
    if kind == "no_commas":
        return {"kind": kind}, "Do not use any commas."
    if kind == "words":  # a range: an empty or one-word answer does not meet it
        top = rng.choice([12, 15, 20])
        return {"kind": kind, "min": 5, "max": top}, f"Use between 5 and {top} words."
    if kind == "sentences":
        top = rng.choice([1, 2, 3])
        text = "Answer in one sentence." if top == 1 else f"Answer in at most {top} sentences."
        return {"kind": kind, "max": top}, text
    if kind == "include":
        word = rng.choice(topic)
        return {"kind": kind, "words": [word]}, f'Use the word "{word}" in your answer.'
    if kind == "exclude":
        word = rng.choice(EXCLUDED)
        return {"kind": kind, "words": [word]}, f'Do not use the word "{word}".'
    if kind == "starts_with":
        phrase = rng.choice(STARTS)
        return {"kind": kind, "phrase": phrase}, f'Start your answer with "{phrase}".'
    phrase = rng.choice(ENDS)
    return (
        {"kind": kind, "phrase": phrase},
        f'End your answer with the exact phrase "{phrase}" and nothing after it.',
    )


def combos() -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """(training kind sets: every single and every pair; unseen kind sets: every triple, so
    each unseen row combines three instructions that training only ever saw two at a time)."""
    train = [(k,) for k in KINDS] + list(itertools.combinations(KINDS, 2))
    return train, list(itertools.combinations(KINDS, 3))


def rows(requests, kind_sets, n: int, rng: random.Random) -> list[dict]:
    out, seen = [], set()
    while len(out) < n:
        request, topic = requests[len(out) % len(requests)]
        kinds = list(rng.choice(kind_sets))
        rng.shuffle(kinds)
        drawn = [constraint(k, topic, rng) for k in kinds]
        text = " ".join([request] + [sentence for _, sentence in drawn])
        if text in seen:
            continue
        seen.add(text)
        out.append(
            {
                "text": text,
                "constraints": [c for c, _ in drawn],
                "on_topic": [{"kind": "include_any", "words": topic_words(request, topic)}],
            }
        )
    rng.shuffle(out)
    return out


def topic_words(request: str, topic: list[str]) -> list[str]:
    """The words an answer on ``request``'s topic likely uses: its topical words and the
    request's own words of five letters or more (``STOP`` aside), for the `on_topic` check."""
    own = [w.strip("?.,").lower() for w in request.split()]
    return list(dict.fromkeys(topic + [w for w in own if len(w) >= 5 and w not in STOP]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    out = parser.parse_args().out
    rng = random.Random(SEED)
    train, unseen = combos()
    sets = {
        "constraints.jsonl": rows(REQUESTS, train, N_TRAIN, rng),
        "constraints-unseen.jsonl": rows(UNSEEN_REQUESTS, unseen, N_UNSEEN, rng),
    }
    for name, data in sets.items():
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
        print(f"{out / name}: {len(data)} rows")


if __name__ == "__main__":
    main()
