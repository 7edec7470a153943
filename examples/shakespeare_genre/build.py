"""Cut the comedies, histories and tragedies in ../shakespeare_gpt/plays into passages of about
1,000 characters, labelled by genres.csv: writes passages.csv (text, genre, play).

Passages end at the first line break after 1,000 characters, so no line is cut; a play's last
passage is kept when it has at least 500 characters. The poems (genre poetry) and the romance
(Pericles) are left out.

    python examples/shakespeare_genre/build.py          # rewrites passages.csv
    python examples/shakespeare_genre/build.py --split  # also suggests seeded test/valid plays
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
PLAYS = HERE.parent / "shakespeare_gpt" / "plays"
GENRES = ("comedy", "history", "tragedy")
LENGTH, SHORTEST = 1000, 500


def passages(text: str) -> list[str]:
    out, buf = [], ""
    for line in text.splitlines(keepends=True):
        buf += line
        if len(buf) >= LENGTH:
            out.append(buf.strip())
            buf = ""
    if len(buf.strip()) >= SHORTEST:
        out.append(buf.strip())
    return out


def build() -> pd.DataFrame:
    genres = pd.read_csv(HERE / "genres.csv")
    rows = []
    for file, genre in zip(genres["file"], genres["genre"], strict=True):
        if genre in GENRES:
            text = (PLAYS / file).read_text(encoding="utf-8")
            rows += [(p, genre, Path(file).stem) for p in passages(text)]
    return pd.DataFrame(rows, columns=["text", "genre", "play"])


def suggest_split(df: pd.DataFrame, seed: int = 0) -> dict[str, list[str]]:
    """Seeded choice of held-out plays: 3 comedies, 2 histories, 3 tragedies for test; 2 of
    each genre for valid."""
    rng = np.random.default_rng(seed)
    split: dict[str, list[str]] = {"test": [], "valid": []}
    for genre, n_test in (("comedy", 3), ("history", 2), ("tragedy", 3)):
        plays = sorted(df.loc[df["genre"] == genre, "play"].unique())
        rng.shuffle(plays)
        split["test"] += plays[:n_test]
        split["valid"] += plays[n_test : n_test + 2]
    return split


if __name__ == "__main__":
    frame = build()
    frame.to_csv(HERE / "passages.csv", index=False)
    counts = frame["genre"].value_counts().to_dict()
    print(f"wrote {len(frame)} passages of {frame['play'].nunique()} plays: {counts}")
    if "--split" in sys.argv:
        print(suggest_split(frame))
