"""The demo data's text pipeline (scripts/catalog_text.py, scripts/catalog_read.py): catalog strings cleaned
for speech, translations filtered, locales told from paths and headers, entries read out of a real archive."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("polib")  # the demo extra
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from catalog_read import english_of, iter_archive_members, locale_of, locale_rank, read_catalog  # noqa: E402
from catalog_text import (  # noqa: E402
    clean_text,
    count_placeholders,
    english_ok,
    normalise_english,
    translation_ok,
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Delete %(count)s files?", "Delete files?"),
        ("Open {0} in {name}", "Open in"),
        ("<b>Save</b> &amp; close", "Save & close"),
        ("&File", "File"),
        ("_Quit the program", "Quit the program"),
        ("Price: %1 (%2)", "Price"),
        ("Hello\u200b world ,", "Hello world"),
    ],
)
def test_clean_text_strips_placeholders_markup_and_accelerators(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


@pytest.mark.parametrize(
    "raw",
    [
        "See https://example.org for help",
        "Write to admin@example.org",
        "Use `pip install x`",
        "a_b = c",
        "%s",
    ],
)
def test_clean_text_drops_strings_espeak_would_read_as_code(raw: str) -> None:
    assert clean_text(raw) == ""


def test_placeholders_are_counted_once_each() -> None:
    assert count_placeholders("%(a)s and %s and {0} and ${x} and {{ y }}") == 5
    assert count_placeholders("No placeholder here.") == 0


def test_english_filters() -> None:
    assert normalise_english("  The  File.  ") == "the file"
    assert english_ok("Save the file", 2, 20) and not english_ok("Save", 2, 20)
    assert not english_ok("Save the файл", 2, 20)  # another script in the English source


def test_translation_filter_rejects_copies_wrong_scripts_and_odd_lengths() -> None:
    en = "Save the file before closing"
    assert translation_ok(en, "Enregistrer le fichier avant de fermer", "fr", 20)
    assert not translation_ok(en, "save the file before closing", "fr", 20)  # untranslated copy
    assert not translation_ok(en, "Сохранить файл перед закрытием", "fr", 20)  # Cyrillic is not French
    assert translation_ok(en, "Сохранить файл перед закрытием", "ru", 20)
    assert not translation_ok(en, "Save the file before closing".replace(" ", "x"), "ru", 20)  # Latin for ru
    assert not translation_ok(en, "Ok", "fr", 20)  # length ratio below 1/3


def test_locales_from_paths_and_headers() -> None:
    assert locale_of("pkg/locale/pt_BR/LC_MESSAGES/django.po", None) == "pt_BR"
    assert locale_of("po/fr.po", None) == "fr"
    assert locale_of("po/messages.pot", "de-at") == "de_AT"
    assert locale_of("po/messages.po", None) is None
    assert locale_rank("pt_BR", "pt") == 0 and locale_rank("pt_PT", "pt") == 1
    assert locale_rank("fr", "fr") == 0 and locale_rank("fr_CA", "fr") == 1
    assert locale_rank("sr@latin", "sr") is None and locale_rank("de", "fr") is None


def test_entries_are_read_out_of_a_wheel(tmp_path: Path) -> None:
    po = (
        'msgid ""\nmsgstr ""\n"Language: fr\\n"\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
        '#. Default: "Save the file"\nmsgid "save_file"\nmsgstr "Enregistrer le fichier"\n'
    )
    wheel = tmp_path / "app-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("app/locale/fr/LC_MESSAGES/app.po", po)
        zf.writestr("app/__init__.py", "")
    members = list(iter_archive_members(wheel))
    assert [m for m, _ in members] == ["app/locale/fr/LC_MESSAGES/app.po"]
    catalog = read_catalog(*members[0])
    entry = next(e for e in catalog if e.msgid)
    assert english_of(entry) == "Save the file"  # the msgid is a key; the comment holds the English
    assert entry.msgstr == "Enregistrer le fichier"


def test_the_system_catalogs_are_refused() -> None:
    from gather_parallel_text import find_archives

    with pytest.raises(ValueError, match="reserved for evaluation"):
        find_archives(Path("/usr/share/locale"))
