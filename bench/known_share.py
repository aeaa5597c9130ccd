"""Where to put SENTIMENT_MIN_KNOWN_SHARE: the share of known n-grams over in-domain reviews, shifted ones and texts
in other languages or none, and how many of each a floor would mark unreadable.

    .venv/bin/python bench/known_share.py [--floors 0.1,0.2,0.25,0.3,0.4,0.5]

In-domain: all 25,000 imdb_test reviews (a floor must mark almost none). Shifted: the Amazon product reviews of
shift_amazon_mds.csv.gz (a few are in Spanish). Foreign: short reviews the project wrote in Chinese, Russian,
Arabic, Japanese, French, German and Spanish, gibberish and emoji, and the hostile texts of model/samples.py.
"""

from __future__ import annotations

import argparse

import numpy as np

from core.settings import DEFAULT_MODEL, Settings
from model.samples import hostile_texts
from model.scorer import ModelArtifact, load_configured_scorer
from training.datasets import imdb_split, read_reviews, shared_data_dir

FOREIGN = [
    "这部电影非常好看，演员的表演很出色，我强烈推荐给大家。",
    "剧情太无聊了，浪费了两个小时。",
    "Этот фильм был просто ужасным, я ушёл через полчаса.",
    "Отличная режиссура и прекрасная игра актёров, рекомендую всем.",
    "كان هذا الفيلم رائعا جدا وأنصح الجميع بمشاهدته.",
    "قصة مملة وتمثيل ضعيف، لا أنصح به.",
    "この映画は本当に素晴らしかった。もう一度見たい。",
    "Ce film était vraiment magnifique, les acteurs sont excellents.",
    "Dieser Film war langweilig und viel zu lang.",
    "Una película aburrida, no la recomiendo a nadie.",
    "asdkjh qwpoeiru zxmcnv lkjasd poiuqwe mnbvzx",
    "xkcd qwfp zzzt brrrp flimflam snorkwobble",
    "🎬🍿😀👍🏽❤️",
    "lorem ipsum dolor sit amet consectetur adipiscing elit",
]


def known_shares(scorer, texts: list[str], batch: int = 512) -> np.ndarray:
    return np.concatenate([scorer.inspect(texts[i : i + batch]).known_shares() for i in range(0, len(texts), batch)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floors", default="0.1,0.2,0.25,0.3,0.4,0.5")
    args = parser.parse_args()
    floors = [float(f) for f in args.floors.split(",")]
    data = shared_data_dir()
    if data is None:
        raise SystemExit("IMDB data not found: see README, Data and licence")
    scorer = load_configured_scorer(ModelArtifact.at(DEFAULT_MODEL), Settings())
    sets = {
        "imdb_test": [r.text for r in imdb_split("test")],
        "amazon (shift)": [r.text for r in read_reviews(data / "shift_amazon_mds.csv.gz")],
        "foreign and gibberish": FOREIGN,
        "hostile (model/samples.py)": [t for t in hostile_texts() if t.strip()],
    }
    print(f"{'set':<28}{'texts':>7}{'min':>7}{'0.1%':>7}{'1%':>7}{'median':>8}", *(f"<{f:g}".rjust(9) for f in floors))
    for name, texts in sets.items():
        shares = known_shares(scorer, texts)
        q = np.quantile(shares, [0, 0.001, 0.01, 0.5])
        marked = [f"{np.mean(shares < f):.2%}".rjust(9) for f in floors]
        print(f"{name:<28}{len(texts):>7}" + "".join(f"{v:>7.3f}" for v in q[:3]) + f"{q[3]:>8.3f}", *marked)


if __name__ == "__main__":
    main()
