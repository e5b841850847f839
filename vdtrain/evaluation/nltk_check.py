"""Find the NLTK data CHAIR needs before any work starts: fetched once into the user's NLTK folder on first use (the
commands ask for that), never downloaded mid-evaluation, and refused with one clear message when it cannot be had."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

# resource name for the downloader -> path that `nltk.data.find` resolves (zipped copies are found as well)
NLTK_RESOURCES = {
    "punkt_tab": "tokenizers/punkt_tab/english/",
    "averaged_perceptron_tagger_eng": "taggers/averaged_perceptron_tagger_eng/",
    "wordnet": "corpora/wordnet",
}
DOWNLOAD_COMMAND = "python -m nltk.downloader " + " ".join(NLTK_RESOURCES)


class MissingNLTKDataError(RuntimeError):
    """Raised when NLTK resources that CHAIR needs are not installed."""


def add_nltk_data_path(nltk_data: str | os.PathLike | None) -> None:
    """Put `nltk_data` (if given) first on NLTK's search path, so it wins over `NLTK_DATA` and the default paths."""
    if nltk_data is None:
        return
    import nltk

    path = str(Path(nltk_data).expanduser().resolve())
    if path in nltk.data.path:
        nltk.data.path.remove(path)
    nltk.data.path.insert(0, path)


def _missing(lemmatizer: str) -> list[str]:
    """Names of the NLTK resources `lemmatizer` needs that NLTK's search path does not hold."""
    import nltk

    needed = NLTK_RESOURCES if lemmatizer == "nltk" else {"punkt_tab": NLTK_RESOURCES["punkt_tab"]}
    missing = []
    for name, resource in needed.items():
        try:
            nltk.data.find(resource)
        except LookupError:
            missing.append(name)
    return missing


def user_nltk_folder() -> Path:
    """Where `nltk.download` puts data for this user: the first writable folder on NLTK's path, else ~/nltk_data."""
    from nltk.downloader import Downloader

    return Path(Downloader().default_download_dir())


def fetch_nltk_data(names: list[str], folder: str | os.PathLike) -> None:
    """Download the NLTK packages `names` into `folder` with NLTK's own downloader; raise `OSError` saying why not."""
    from nltk.downloader import Downloader

    downloader, errors = Downloader(server_index_url=os.environ.get("NLTK_DOWNLOAD_URL") or None), io.StringIO()
    for name in names:
        try:
            done = downloader.download(name, str(folder), quiet=True, raise_on_error=True, print_error_to=errors)
        except (OSError, ValueError) as error:  # NLTK reports network failures as ValueError("Error loading ...")
            raise OSError(str(error).replace(f"Error loading {name}: ", "")) from error
        if not done:
            raise OSError(errors.getvalue().strip() or f"NLTK's downloader did not install {name}")


def require_nltk_data(
    nltk_data: str | os.PathLike | None = None, lemmatizer: str = "nltk", *, fetch: bool = False
) -> None:
    """Check that the NLTK data of `lemmatizer` is installed (fetching it first if asked); raise one clear error if
    it cannot be had.

    Args:
        nltk_data (`str` or `os.PathLike`, *optional*): a data directory to search first; otherwise `NLTK_DATA` and
            NLTK's default locations are searched.
        lemmatizer (`str`, defaults to `"nltk"`): `"nltk"` needs punkt_tab, the English perceptron tagger and
            WordNet; `"pattern"` tokenises with punkt_tab only.
        fetch (`bool`, defaults to `False`): download what is missing, once, into `nltk_data` if given, else the
            user's NLTK folder (`~/nltk_data`), saying so in one line on stderr. Without a network it fails fast and
            the error says how to install the data by hand.
    """
    try:
        import nltk
    except ImportError as err:
        raise MissingNLTKDataError("CHAIR needs nltk: pip install nltk") from err
    add_nltk_data_path(nltk_data)
    missing, failure = _missing(lemmatizer), ""
    if missing and fetch:
        folder = Path(nltk_data).expanduser().resolve() if nltk_data is not None else user_nltk_folder()
        print(f"vdtrain: fetching NLTK data {', '.join(missing)} (first use, ~40 MB) into {folder}", file=sys.stderr)
        try:
            fetch_nltk_data(missing, folder)
        except OSError as error:
            failure = f"; fetching it into {folder} failed: {error}"
        if str(folder) not in nltk.data.path:
            nltk.data.path.append(str(folder))
        missing = _missing(lemmatizer)
    if missing:
        searched = ", ".join(nltk.data.path[:4]) + (", ..." if len(nltk.data.path) > 4 else "")
        download = "python -m nltk.downloader " + " ".join(missing)
        raise MissingNLTKDataError(
            f"missing NLTK data: {', '.join(missing)} (searched {searched}{failure}). Install it with `{download}`, "
            "or point NLTK_DATA / --nltk-data at a directory that has it."
        )
