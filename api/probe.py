"""Wait for a started ``miner serve`` to answer ``GET /readyz`` with 200 (standard library only).

For what starts a server and then talks to it (tests, benchmarks, scripts): it stops early, with the reason,
when the server process exits or ``/readyz`` reports a failed load, instead of polling until the timeout.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["ServerNotReady", "wait_until_ready"]


class ServerNotReady(RuntimeError):
    """The server exited, failed to load its models, or was not ready in time (the message says which)."""


def _log_tail(log: Path | None, chars: int = 3000) -> str:
    if log is None or not Path(log).is_file():
        return ""
    return "; its log ends: " + Path(log).read_text(encoding="utf-8", errors="replace")[-chars:]


def wait_until_ready(
    url: str,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 600.0,
    log: Path | None = None,
    every: float = 0.5,
) -> None:
    """Poll ``{url}/readyz`` until it answers 200.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
        proc: the server process, when this caller started it: its exit ends the wait at once.
        timeout: seconds to wait in all.
        log: the server's log file, whose tail goes into the error.
        every: seconds between polls.

    Raises:
        ServerNotReady: the process exited, ``/readyz`` said ``failed`` (its detail is in the message), or
            ``timeout`` passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServerNotReady(
                f"miner serve exited with code {proc.returncode} before it was ready{_log_tail(log)}"
            )
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError as exc:  # 503 while loading, or after a failed load
            try:
                body = json.loads(exc.read() or b"{}")
            except ValueError:
                body = {}
            if body.get("status") == "failed":
                raise ServerNotReady(
                    f"miner serve failed to load: {body.get('detail')}{_log_tail(log)}"
                ) from None
        except (urllib.error.URLError, OSError):
            pass  # not listening yet
        if time.monotonic() >= deadline:
            raise ServerNotReady(f"{url} was not ready after {timeout:.0f} s{_log_tail(log)}")
        time.sleep(every)
