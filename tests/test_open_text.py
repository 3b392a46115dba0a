"""Open-domain training and test data: the Debian book readers, sentence selection, structural alignment,
held-out pages, and the synthesis plan (voices held out of training, joined sentences)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from gather_open_text import align_to_english, doc_split, gather, speakable, split_sentences  # noqa: E402
from open_text_sources import Document, html_paragraphs, read_fortunes, read_handbook  # noqa: E402
from synthesize_open import Plan, join_runs, plan, training_voices  # noqa: E402

PAGE = """<html><body><div class="para">The first sentence is here. A second one
follows it <code class="command">apt-get</code> now.</div><div class="para">
<pre class="screen">$ ls /etc</pre>Plain words again &amp; more.</div>
<div class="para">Short.</div></body></html>"""


def test_paragraphs_leave_out_code_screens_and_keep_a_mark_where_inline_code_was(tmp_path: Path) -> None:
    page = tmp_path / "p.html"
    page.write_text(PAGE, encoding="utf-8")
    paras = html_paragraphs(page, lambda tag, cls: tag == "div" and cls == "para")
    assert paras[0].startswith("The first sentence is here. A second one follows it")
    assert "\x00" in paras[0]  # the inline command left a mark: that sentence will not be spoken
    assert paras[1] == "Plain words again & more."  # the screen block is gone, the entity unescaped
    sents = split_sentences(paras[0])
    assert [speakable(s) for s in sents] == [True, False]


def test_speakable_keeps_prose_and_drops_code_paths_numbers_and_fragments() -> None:
    assert speakable("Debian is a free operating system made by volunteers.")
    assert not speakable("Edit /etc/apt/sources.list first.")  # a path
    assert not speakable("Run it with --force=yes now please.")  # flags and code characters
    assert not speakable("Version 12345 was released then.")  # long numbers
    assert not speakable("Too short.")  # under four words
    assert not speakable("A sentence that never ends with punctuation")
    assert not speakable("The package manager\x85 installs everything you need.")  # a C1 control character
    assert not speakable("The package manager\x08 installs everything you need.")  # a C0 one


def test_handbook_pages_align_by_structure_and_untranslated_text_is_dropped(tmp_path: Path) -> None:
    base = tmp_path / "usr/share/doc/debian-handbook/html"
    en = "<div class='para'>The cat sleeps on the sofa today. It is warm there and quiet.</div>"
    de = "<div class='para'>Die Katze schläft heute auf dem Sofa. Dort ist es warm und ruhig.</div>"
    untranslated = "<div class='para'>The cat sleeps on the sofa today. It is warm there and quiet.</div>"
    for locale, body in (("en-US", en), ("de-DE", de), ("sv-SE", untranslated)):
        (base / locale).mkdir(parents=True)
        (base / locale / "sect.cats.html").write_text(body.replace("'", '"'), encoding="utf-8")
    docs = {d.lang: d for d in read_handbook(tmp_path)}
    assert set(docs) == {"en", "de", "sv"} and docs["de"].doc == docs["en"].doc == "handbook/sect.cats"
    pairs = align_to_english(docs["de"], docs["en"])
    assert [(p, s, en_text) for p, s, _, en_text in pairs] == [
        (0, 0, "The cat sleeps on the sofa today."),
        (0, 1, "It is warm there and quiet."),
    ]
    assert all(text != en_text for _, _, text, en_text in align_to_english(docs["sv"], docs["en"]))
    # A paragraph whose sentence counts differ keeps its sentences without an English reference.
    uneven = Document("handbook", "handbook/x", "de", ("Ein einziger langer Satz steht hier allein.",))
    english = Document("handbook", "handbook/x", "en", ("One sentence is here. Another one is here too.",))
    assert [en_text for *_, en_text in align_to_english(uneven, english)] == [""] * (
        doc_split("handbook/x", "handbook") == "train"
    )


def test_pages_are_held_out_whole_and_stably() -> None:
    splits = {doc_split(f"handbook/page{i}", "handbook") for i in range(200)}
    assert splits == {"train", "dev", "test"}
    assert doc_split("handbook/page7", "handbook") == doc_split("handbook/page7", "handbook")
    assert doc_split("fortunes/de/x/1", "fortunes") == "train"  # only the translated book is held out


def test_fortunes_skip_attributions_and_offensive_files(tmp_path: Path) -> None:
    folder = tmp_path / "usr/share/games/fortunes/de"
    folder.mkdir(parents=True)
    (folder / "zitate").write_text("Wer rastet, der rostet immer.\n\t\t-- Sprichwort\n%\nZwei Worte.\n%\n")
    (folder / "off").write_text("Nicht hier.\n%\n")
    docs = list(read_fortunes(tmp_path, "de"))
    assert [d.paragraphs for d in docs] == [("Wer rastet, der rostet immer.",), ("Zwei Worte.",)]


def _rows(lang: str, split: str, doc: str, n: int, source: str = "handbook") -> list[dict[str, str]]:
    return [
        {"id": f"{doc}{lang}{i}", "source": source, "doc": doc, "para": "0", "sent": str(i), "lang": lang,
         "text": f"Sentence number {i} of {doc} in {lang} is here.",
         "translation": f"Sentence number {i} of {doc} is here.", "split": split}
        for i in range(n)
    ]  # fmt: skip


def _two_language_pages() -> tuple[list[dict[str, str]], dict[str, dict[str, list[str]]]]:
    """English and German train, test and dev pages, and voices: espeak-ng and Piper to train on, Pico held out."""
    rows = []
    for lang in ("en", "de"):
        rows += _rows(lang, "train", "handbook/a", 12) + _rows(lang, "test", "handbook/t", 4)
        rows += _rows(lang, "dev", "handbook/d", 3)
    voices = {
        "en": {"espeak": ["en-us", "en-us+m1"], "pico": ["en-GB", "en-US"], "piper": ["joe"]},
        "de": {"espeak": ["de", "de+f2"], "pico": ["de-DE"]},
    }
    return rows, voices


def test_plan_keeps_held_out_voices_out_of_training_and_joins_runs() -> None:
    rows, voices = _two_language_pages()
    plans = plan(rows, voices, train_per_lang=6, join_share=1.0, max_seconds=25, augment_share=0.5, seed=3)
    train = [p for p in plans if p.split == "train"]
    assert train and all(p.synth != "pico" for p in train)  # Pico is the unseen-voice test's
    assert any(len(p.text.split(". ")) > 1 for p in train)  # runs of consecutive sentences were joined
    unseen = [p for p in plans if p.split == "test_unseen"]
    assert unseen and {p.synth for p in unseen} == {"pico"} and {p.lang for p in unseen} == {"de"}
    assert {p.synth for p in plans if p.split == "test_en"} == {"pico"}
    assert {p.synth for p in plans if p.split in ("dev", "test_seen")} == {"espeak"}
    assert plans == plan(rows, voices, train_per_lang=6, join_share=1.0, max_seconds=25, augment_share=0.5,
                         seed=3)  # fmt: skip
    assert training_voices("ru", {"festival": ["msu_ru_nsh_clunits"], "espeak": ["ru"]}) == {"espeak": ["ru"]}
    # dev_clean: the dev pages by the non-espeak training voices only (Piper here; Pico stays the test's), listed
    # last
    clean = [p for p in plans if p.split == "dev_clean"]
    assert clean and {(p.lang, p.synth) for p in clean} == {("en", "piper")}
    assert plans[-len(clean) :] == clean


def test_held_out_plans_do_not_depend_on_the_training_size_or_voices() -> None:
    # A rebuild of the test sets alone (another --train-per-lang, another set of training voices installed) must
    # give the same clips: rate, pitch and voice included.
    rows, voices = _two_language_pages()
    more_voices = {**voices, "en": {**voices["en"], "festival": ["kal_diphone"]}}

    def held_out(train_per_lang: int, voices: dict[str, dict[str, list[str]]]) -> list[Plan]:
        plans = plan(rows, voices, train_per_lang=train_per_lang, join_share=0.5, max_seconds=25,
                     augment_share=0.5, seed=3)  # fmt: skip
        return [p for p in plans if p.split in ("dev", "test_seen", "test_unseen", "test_en")]

    reference = held_out(6, voices)
    assert {p.split for p in reference} == {"dev", "test_seen", "test_unseen", "test_en"}
    assert held_out(2, voices) == reference
    assert held_out(6, more_voices) == reference


def test_join_runs_are_consecutive_and_fit_the_length() -> None:
    group = _rows("de", "train", "handbook/a", 20)
    runs = join_runs(group, random.Random(0), max_seconds=10.0)
    assert [r["sent"] for run in runs for r in run] == [str(i) for i in range(20)]  # every sentence, in order
    assert all(sum(len(r["text"]) for r in run) / 14.0 <= 10.0 or len(run) == 1 for run in runs)


def test_gather_on_an_empty_folder_gives_no_rows(tmp_path: Path) -> None:
    (tmp_path / "debian-handbook").mkdir()
    assert gather(tmp_path) == []
