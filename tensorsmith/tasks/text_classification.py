"""``task: text-classification``: a class for each text, beside two baselines.

Every evaluation also scores, on the same split and with the same metrics, the majority class of
the train split and TF-IDF + logistic regression (scikit-learn's defaults) fitted on the train
texts: ``majority_f1_macro``, ``tfidf_lr_f1_macro`` … The model card lists the test texts the
model got wrong with the most confidence.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from torch import nn

from tensorsmith.data.text import DataWarning
from tensorsmith.errors import DataError
from tensorsmith.recipe import TextClassificationRecipe
from tensorsmith.tasks.base import EvalSplit, Outputs
from tensorsmith.tasks.text import TextSplit, TextTask

__all__ = ["TextClassificationTask"]

WORST = 5  # confidently wrong texts shown in the card
SHOWN_CHARS = 400


class TextClassificationTask(TextTask):
    name = "text-classification"
    target_kind = "label"
    metric_names = TextClassificationRecipe.metric_names
    key_metric = TextClassificationRecipe.key_metric
    losses = TextClassificationRecipe.losses

    _baseline: Any = None  # (TfidfVectorizer, LogisticRegression) fitted on the train texts

    def _tfidf(self) -> Any:
        """TF-IDF + logistic regression on the train texts (fitted once, on first use)."""
        if self._baseline is not None:
            return self._baseline
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        spec = self.data_spec
        train = getattr(self, "train_frame_", None)
        if train is None:  # a loaded model: the train split of its own data
            try:
                train = self.read_splits()["train"]
            except DataError as exc:
                warnings.warn(f"no TF-IDF baseline: {exc}", DataWarning, stacklevel=2)
                self._baseline = False
                return False
        vectorizer = TfidfVectorizer()
        x = vectorizer.fit_transform(train[spec.text_column].astype(str))
        y = self.classes.encode(train[spec.target], "the train split")
        self._baseline = (vectorizer, LogisticRegression(max_iter=1000).fit(x, y))
        return self._baseline

    def reference_outputs(self, split: EvalSplit, outputs: Outputs) -> dict[str, Outputs]:
        if not isinstance(split, TextSplit) or outputs.y_true is None:
            return {}
        k, n = self.classes.n_classes, len(outputs.y_true)
        prior = np.asarray(self.classes.counts_, dtype=np.float64)
        prior = prior / prior.sum()
        out = {
            "majority": Outputs(
                float("nan"),
                y_true=outputs.y_true,
                y_pred=np.full(n, int(prior.argmax())),
                proba=np.tile(prior, (n, 1)),
                n_classes=k,
            )
        }
        baseline = self._tfidf()
        if baseline:
            vectorizer, model = baseline
            proba = np.zeros((n, k))
            proba[:, model.classes_] = model.predict_proba(vectorizer.transform(split.texts))
            out["tfidf_lr"] = Outputs(
                float("nan"),
                y_true=outputs.y_true,
                y_pred=proba.argmax(1),
                proba=proba,
                n_classes=k,
            )
        return out

    def card_sections(self, module: nn.Module, outputs: Outputs | None, split: str) -> list[str]:
        lines = super().card_sections(module, outputs, split)
        part = outputs.split if outputs is not None else None
        if not isinstance(part, TextSplit) or outputs is None or outputs.proba is None:
            return lines
        assert outputs.y_true is not None and outputs.y_pred is not None
        wrong = np.flatnonzero(outputs.y_true != outputs.y_pred)
        worst = wrong[np.argsort(-outputs.proba[wrong].max(axis=1), kind="stable")][:WORST]
        classes = self.classes.classes_
        lines += ["## Most confidently wrong texts", ""]
        if not len(worst):
            return [*lines, "None: every text of the split is classified right.", ""]
        for i in worst:
            text = " ".join(part.texts[i].split())
            text = text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"
            where = f" ({self.data_spec.split.group} {part.groups[i]})" if part.groups else ""
            lines += [
                f"- predicted **{classes[int(outputs.y_pred[i])]}** with "
                f"{outputs.proba[i].max():.0%}, true **{classes[int(outputs.y_true[i])]}**{where}:",
                "",
                f"  > {text}",
                "",
            ]
        return lines
