"""Rows through `datasets`: a hub set (or its local cache), local parquet/JSON/CSV files, and
folders written by ``Dataset.save_to_disk``.  Every failure becomes one :class:`DatasetError` line."""

from __future__ import annotations

import csv
import socket
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relaygen_sgl.jsonl import JsonlError, numbered_records
from relaygen_sgl.problem_sets.problem import DatasetError

# How a file's suffix (after a compression suffix) names its `datasets` builder.
SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
}
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
SAVED_MARKERS = ("state.json", "dataset_dict.json")  # what save_to_disk writes
HUB_PROBE_TIMEOUT_S = 3.0


@dataclass
class Rows:
    """A set's rows and what to call it in messages; ``numbers`` (1-based) name rows and ids."""

    rows: Iterable[Mapping[str, Any]]
    columns: list[str]
    source: str
    id_prefix: str
    numbers: list[int] | None = None
    where: str = field(default="{source} row {n}")


def _one_line(e: BaseException) -> str:
    from datasets.exceptions import DatasetGenerationError

    if isinstance(e, DatasetGenerationError) and e.__cause__ is not None:
        e = e.__cause__  # "An error occurred while generating the dataset": the cause says which
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def file_kind(path: str | Path) -> str | None:
    """``parquet``, ``json``, ``jsonl``, ``csv`` or ``tsv`` from the suffix, or None."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes.pop()
    return SUFFIXES.get(suffixes[-1]) if suffixes else None


def _stem(path: Path) -> str:
    name = path.name
    for s in reversed(path.suffixes):
        if s.lower() in COMPRESSED or s.lower() in SUFFIXES:
            name = name[: -len(s)]
    return name or path.name


@contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars or info lines from `datasets` in the middle of our own output."""
    from datasets.utils import logging as ds_logging
    from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    level, bars_off = ds_logging.get_verbosity(), are_progress_bars_disabled()
    ds_logging.set_verbosity_error()
    disable_progress_bars()
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)
        if not bars_off:
            enable_progress_bars()


# ---- the hub -------------------------------------------------------------------------------


def hub_endpoint() -> str:
    from datasets import config

    return str(config.HF_ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """HF_DATASETS_OFFLINE / HF_HUB_OFFLINE, as `datasets` read them."""
    from datasets import config

    return bool(config.HF_HUB_OFFLINE)


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Can we open a connection to the hub (or the mirror HF_ENDPOINT names)?  Asked once, so an
    unreachable hub costs seconds instead of the hub client's retries."""
    url = urlsplit(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def _offline(on: bool) -> Iterator[None]:
    """Offline mode for one call: `datasets` then goes straight to its cache.  Both libraries
    read the flag from their module constants at call time, so setting them is enough."""
    if not on:
        yield
        return
    import huggingface_hub.constants as hub_constants
    from datasets import config

    saved = config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _cache_dir() -> str:
    from datasets import config

    return str(config.HF_DATASETS_CACHE)


def choose_split(splits: list[str], split: str | None, label: str) -> str:
    """The asked split, else the only one, else ``test``."""
    if split is not None:
        if split not in splits:
            raise DatasetError(f"{label}: no split {split!r}; it has: {', '.join(splits)}")
        return split
    if len(splits) == 1:
        return splits[0]
    if "test" in splits:
        return "test"
    raise DatasetError(f"{label}: it has several splits ({', '.join(splits)}); pick one with --split")


def _picked(d: Any, split: str | None, label: str) -> tuple[Any, str]:
    """A Dataset from a Dataset or DatasetDict, and its label with the split."""
    from datasets import DatasetDict

    if isinstance(d, DatasetDict):
        name = choose_split(list(d), split, label)
        return d[name], f"{label} (split {name})"
    own = str(d.split) if d.split is not None else None
    if split is not None and split != own:
        raise DatasetError(f"{label}: it holds one split ({own or 'unnamed'}), not {split!r}; drop --split")
    return d, f"{label} (split {split or own})" if (split or own) else label


def hub_rows(
    name: str, config: str | None, split: str | None, *, label: str, id_prefix: str, hint: str = ""
) -> Rows:
    """A hub set: from the hub when it answers, else (or with HF_DATASETS_OFFLINE) from the cache.
    ``name`` may also be a local folder laid out like a hub repository (a clone of one)."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    local = Path(name).expanduser().is_dir()
    offline = hub_offline()
    reachable = local or (not offline and hub_reachable())
    try:
        with _quiet(), _offline(not reachable):
            d = datasets.load_dataset(name, config, split=split)  # no split: a DatasetDict
    except (ConnectionError, FileNotFoundError) as e:
        if local:
            raise DatasetError(f"{label}: {_one_line(e)}") from e
        why = (
            "offline mode is on (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE)"
            if offline
            else f"the hub ({hub_endpoint()}) is not reachable from here"
        )
        args = ", ".join(repr(a) for a in (name, config) if a) + f", split={split or 'test'!r}"
        out = f"{Path(name).name}.parquet"
        raise DatasetError(
            f"{label}: not available: {why}, and the set is not in the local datasets cache "
            f'({_cache_dir()}). To get it, where the hub is reachable run: python -c "import datasets; '
            f"datasets.load_dataset({args}).to_parquet('{out}')\" and pass parquet:{out}, "
            "or copy that machine's datasets cache into HF_DATASETS_CACHE here"
            + (f"; {hint}" if hint else "")
        ) from e
    except DatasetNotFoundError as e:
        raise DatasetError(f"{label}: {_one_line(e)}" + (f" ({hint})" if hint else "")) from e
    except Exception as e:  # unknown split or config, a broken cache, ...: the library says which
        raise DatasetError(f"{label}: {_one_line(e)}") from e
    d, label = _picked(d, split if not isinstance(d, datasets.Dataset) else None, label)
    return Rows(d, list(d.column_names), label, id_prefix)


# ---- local files and saved folders ---------------------------------------------------------


def _jsonl_lines(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Every record with its line number: a bad line is named, and ids keep counting lines."""
    try:
        records = list(numbered_records(path.read_text(), str(path)))
    except JsonlError as e:
        raise DatasetError(str(e)) from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e.reason})") from e
    for i, r in records:
        if not isinstance(r, dict):
            raise DatasetError(f"{path}:{i}: not a JSON object")
    return [r for _, r in records], [i for i, _ in records]


def _parquet_rows(path: Path) -> int | None:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # not parquet: `datasets` says so below
        return None


def file_rows(kind: str, path: str | Path, split: str | None, *, label: str) -> Rows:
    """A local parquet, JSON, JSON Lines, CSV or TSV file, read by ``datasets.load_dataset``."""
    import datasets

    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"{label}: file not found")
    if not p.is_file():
        raise DatasetError(f"{label}: not a file (a folder saved by save_to_disk is disk:PATH)")
    if split not in (None, "train"):
        raise DatasetError(f"{label}: one file is one split; drop --split {split}")
    if p.stat().st_size == 0 or (kind == "parquet" and _parquet_rows(p) == 0):
        raise DatasetError(f"{label}: the set is empty")
    kw: dict[str, Any] = {}
    lines = None
    plain = p.suffix.lower() not in COMPRESSED
    if kind == "jsonl" and plain:
        lines = _jsonl_lines(p)
        if not lines[0]:
            raise DatasetError(f"{label}: the set is empty")
    if kind in ("csv", "tsv"):
        sep = "\t" if kind == "tsv" else ","
        kw["sep"] = sep
        if plain:  # every column as text, so answers such as "007" or "1.50" stay as written
            with p.open(newline="") as f:
                header = next(csv.reader(f, delimiter=sep), [])
            kw["features"] = datasets.Features({c: datasets.Value("string") for c in header})
    builder = {"jsonl": "json", "tsv": "csv"}.get(kind, kind)
    try:
        with _quiet():
            d = datasets.load_dataset(builder, data_files=str(p), split="train", **kw)
        rows: Iterable[Mapping[str, Any]] = d
        columns = list(d.column_names)
    except Exception as e:
        if lines is None:
            raise DatasetError(f"{label}: cannot read it as {kind}: {_one_line(e)}") from e
        # `datasets` 5 cannot read JSON Lines with blank lines and a column of mixed types; the
        # lines are parsed already, so use them.
        rows = lines[0]
        columns = list(dict.fromkeys(k for r in lines[0] for k in r))
    where = "{source}:{n}" if lines is not None else "{source} row {n}"
    return Rows(rows, columns, label, _stem(p), lines[1] if lines else None, where)


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in SAVED_MARKERS)


def disk_rows(path: str | Path, split: str | None, *, label: str) -> Rows:
    """A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    import datasets

    p = Path(path).expanduser()
    if not p.is_dir():
        raise DatasetError(f"{label}: folder not found")
    if not is_saved_dataset(p):
        raise DatasetError(f"{label}: not a folder written by save_to_disk (no {' or '.join(SAVED_MARKERS)})")
    try:
        with _quiet():
            d = datasets.load_from_disk(str(p))
    except Exception as e:
        raise DatasetError(f"{label}: cannot load it: {_one_line(e)}") from e
    d, label = _picked(d, split, label)
    return Rows(d, list(d.column_names), label, p.name)
