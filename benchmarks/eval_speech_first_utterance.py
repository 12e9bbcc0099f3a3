"""Leave-one-corpus-out UAR of the functionals MLP when each test file is its speaker's first.

The protocol table in ``models/speech_emotion.md`` normalises every test speaker with the
statistics of all of their files (no labels); here each test file is normalised with the shrunk
statistics of that one file only (what the model sees the first time it hears a voice), with the
same training. Needs PyTorch and the cached features (``emolens train speech --model functionals``).

    python benchmarks/eval_speech_first_utterance.py
"""

from __future__ import annotations

import numpy as np

from emolens.train.speech_multi import (
    MultiConfig,
    corpus_report,
    global_stats,
    load_features,
    loco_split,
    logits_of,
    normalized,
    online_normalize,
    train_on,
)


def main() -> None:
    """Print the first-utterance LOCO UAR per corpus."""
    cfg = MultiConfig(copies=2, norm="online", prior=8.0, hidden=128, encoder=True)
    data, feats, _ = load_features("../shared/data", cfg)
    for corpus in dict.fromkeys(data.corpora.tolist()):
        train, test, classes = loco_split(data, corpus)
        stats = global_stats(feats, train)
        net = train_on(data, normalized(feats, data, cfg, *stats), train, cfg, stats)
        first = online_normalize(feats[0], data.speakers, stats[0], stats[1], cfg.prior, np.random.default_rng(0),
                                 sizes=(1,))
        rep = corpus_report(data.labels[test], logits_of(net, first[test]), classes, data.classes)
        print(f"{corpus}: first-utterance UAR {rep['uar']:.3f} (chance {rep['chance_uar']:.3f})", flush=True)


if __name__ == "__main__":
    main()
