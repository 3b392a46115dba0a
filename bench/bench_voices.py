"""Speed of every installed synthesizer and of the augmentation chain, on one core.

    python bench/bench_voices.py [--repeats 2] [--core 0]

For each synthesizer and a few of its voices, speaks the same short, medium and long sentences of the voice's
language (40-230 characters) at rate 1.0, and reports audio seconds per wall second (x real time, process
start-up of the command-line engines included) and characters per second of speech (for planning joined
utterances). Then times the augmentation chain (default probabilities, 200 seeds) on a 5 s clip. The process
is pinned to one core (``--core``, -1 to leave it free); subprocesses inherit the pinning. Prints a markdown
table.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from miner.voices import all_synthesizers
from miner.voices.augment import augment

SENTENCES = {
    "en": [
        "The museum opens at nine on weekdays.",
        "After the storm, the villagers rebuilt the old stone bridge that connected the two halves of the town.",
        "Scientists have long debated whether the climate of the region changed gradually over thousands of "
        "years, or whether a sudden shift in ocean currents transformed it within a single generation.",
    ],
    "de": [
        "Das Museum öffnet werktags um neun.",
        "Nach dem Sturm bauten die Dorfbewohner die alte Steinbrücke wieder auf, die beide Ortsteile verband.",
        "Wissenschaftler streiten seit langem darüber, ob sich das Klima der Region über Jahrtausende "
        "allmählich veränderte oder ob eine plötzliche Verschiebung der Meeresströmungen es rasch umformte.",
    ],
    "fr": [
        "Le musée ouvre à neuf heures en semaine.",
        "Après la tempête, les villageois ont reconstruit le vieux pont de pierre qui reliait les deux quartiers.",
        "Les scientifiques se demandent depuis longtemps si le climat de la région a changé progressivement "
        "pendant des millénaires, ou si un brusque changement des courants marins l'a transformé rapidement.",
    ],
    "it": [
        "Il museo apre alle nove nei giorni feriali.",
        "Dopo la tempesta, gli abitanti ricostruirono il vecchio ponte di pietra che univa le due parti del paese.",
        "Gli scienziati discutono da tempo se il clima della regione sia cambiato gradualmente nel corso di "
        "millenni, oppure se un improvviso spostamento delle correnti oceaniche lo abbia trasformato in fretta.",
    ],
    "ru": [
        "Музей открывается в девять часов по будням.",
        "После бури жители деревни восстановили старый каменный мост, который соединял две части города.",
        "Учёные давно спорят о том, менялся ли климат региона постепенно на протяжении тысячелетий, или же "
        "внезапный сдвиг океанских течений преобразил его за одно поколение.",
    ],
}
VOICES = {
    "espeak": ["en-us", "en-gb+m3", "de+f2", "fr-fr+klatt", "ru+m1"],
    "pico": ["en-US", "de-DE", "fr-FR", "it-IT"],
    "festival": [
        "kal_diphone",
        "ked_diphone",
        "cmu_us_slt_arctic_hts",
        "lp_diphone",
        "pc_diphone",
        "msu_ru_nsh_clunits",
    ],
    "piper": ["en_US-joe-medium", "en_US-joe-medium+steady"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--core", type=int, default=0, help="CPU to pin to; -1: no pinning")
    args = ap.parse_args()
    if args.core >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, pinned to core {args.core}\n"
    )
    print("| synthesizer | voice | audio s | wall s | x real time | chars / s of speech |")
    print("|---|---|---:|---:|---:|---:|")
    for synth in all_synthesizers():
        ok, why = synth.available()
        if not ok:
            print(f"| {synth.name} | not available: {why} | | | | |")
            continue
        installed = set(synth.voices())
        for voice in VOICES.get(synth.name, []):
            if voice not in installed:
                continue
            lang = next(lg for lg in SENTENCES if synth.voices(lg) and voice in synth.voices(lg))
            synth.speak("Warm up.", voice) if lang == "en" else synth.speak(SENTENCES[lang][0], voice)
            audio = wall = chars = 0.0
            for _ in range(args.repeats):
                for text in SENTENCES[lang]:
                    t = time.perf_counter()
                    clip = synth.speak(text, voice)
                    wall += time.perf_counter() - t
                    audio += len(clip) / 16000
                    chars += len(text)
            print(
                f"| {synth.name} | {voice} | {audio:.1f} | {wall:.2f} | {audio / wall:.0f} | {chars / audio:.1f} |"
            )
    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal(16000 * 5)).astype(np.float32)
    t = time.perf_counter()
    for seed in range(200):
        augment(clip, seed=seed)
    wall = time.perf_counter() - t
    print(f"\naugmentation chain (default probabilities, 200 x 5 s): {200 * 5 / wall:.0f}x real time")


if __name__ == "__main__":
    main()
