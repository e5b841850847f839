"""Find the NLTK data CHAIR needs before any work starts, and never download it mid-evaluation."""

from __future__ import annotations

import os
from pathlib import Path

from vdtrain.errors import MissingNLTKDataError as MissingNLTKDataError  # re-exported: it lives in vdtrain.errors

# resource name for the downloader -> path that `nltk.data.find` resolves (zipped copies are found as well)
NLTK_RESOURCES = {
    "punkt_tab": "tokenizers/punkt_tab/english/",
    "averaged_perceptron_tagger_eng": "taggers/averaged_perceptron_tagger_eng/",
    "wordnet": "corpora/wordnet",
}


def add_nltk_data_path(nltk_data: str | os.PathLike | None) -> None:
    """Put `nltk_data` (if given) first on NLTK's search path, so it wins over `NLTK_DATA` and the default paths."""
    if nltk_data is None:
        return
    import nltk

    path = str(Path(nltk_data).expanduser().resolve())
    if path in nltk.data.path:
        nltk.data.path.remove(path)
    nltk.data.path.insert(0, path)


def require_nltk_data(nltk_data: str | os.PathLike | None = None, lemmatizer: str = "nltk") -> None:
    """Check that the NLTK data of `lemmatizer` is installed; raise one clear error if not.

    Args:
        nltk_data (`str` or `os.PathLike`, *optional*): a data directory to search first; otherwise `NLTK_DATA` and
            NLTK's default locations are searched.
        lemmatizer (`str`, defaults to `"nltk"`): `"nltk"` needs punkt_tab, the English perceptron tagger and
            WordNet; `"pattern"` tokenises with punkt_tab only.
    """
    try:
        import nltk
    except ImportError as err:
        raise MissingNLTKDataError("CHAIR needs nltk: pip install nltk") from err
    add_nltk_data_path(nltk_data)
    missing = []
    needed = NLTK_RESOURCES if lemmatizer == "nltk" else {"punkt_tab": NLTK_RESOURCES["punkt_tab"]}
    for name, resource in needed.items():
        try:
            nltk.data.find(resource)
        except LookupError:
            missing.append(name)
    if missing:
        searched = ", ".join(nltk.data.path[:4]) + (", ..." if len(nltk.data.path) > 4 else "")
        download = "python -m nltk.downloader " + " ".join(missing)
        raise MissingNLTKDataError(
            f"missing NLTK data: {', '.join(missing)} (searched {searched}). Install it with `{download}`, "
            "or point NLTK_DATA / --nltk-data at a directory that has it."
        )
