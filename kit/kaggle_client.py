"""The real `kaggle` client, imported lazily and wrapped: retries, clear errors, no leaks.

Retries follow what each failure means: a 429 waits its Retry-After; 5xx, lost connections,
timeouts and cut downloads back off and try again, except for a request that changes something
(a push), whose answer may be lost after Kaggle acted: that raises AnswerLost for the caller to
look first. `check_client` names the oldest client the kit works with.

`import kaggle` authenticates at import time; without credentials it prints its help text and
creates a config folder. So it is imported only by the verbs that talk to Kaggle, with its
chatter captured, and a missing credential becomes one line saying what to set.
"""

import contextlib
import importlib.metadata
import io
import json
import os
import re
import time
from pathlib import Path

# HTTP statuses worth another try: rate limiting and server-side failures.
RETRY_STATUSES = {429, 500, 502, 503, 504}
# The oldest client the kit works with: 2.2.5 sends a version's number with `kernels status`
# (earlier ones drop it and report the latest version's status, kaggle-cli PR #1201).
MINIMUM_CLIENT = "2.2.5"
# The longest Retry-After honoured; a longer one is waited in this many seconds at a time.
MAXIMUM_RETRY_AFTER = 600.0


# Kinds of output whose file never starts with "<", "{" or "[" (a CSV starts with its header, an
# NPZ with "PK", a PNG with its signature), so that an HTTP error body (an HTML page, a JSON
# error) saved under such a name is recognised.
BINARY_OR_TABLE = {".csv": "a CSV", ".npz": "an NPZ archive", ".png": "a PNG image"}


class KaggleError(RuntimeError):
    """A Kaggle request failed; the message is one line meant for the user."""


class AnswerLost(KaggleError):
    """A request that changes something may have been carried out, but its answer never came
    (a timeout, a reset connection, a gateway error): sending it again could do it twice."""


def check_client(version=None):
    """Raise KaggleError (one line) unless the `kaggle` client installed (or `version`) is at
    least MINIMUM_CLIENT; returns the version."""
    if version is None:
        try:
            version = importlib.metadata.version("kaggle")
        except importlib.metadata.PackageNotFoundError:
            raise KaggleError(
                f"the kaggle client is not installed; run: pip install 'kaggle>={MINIMUM_CLIENT}'"
            ) from None
    numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:3])
    if numbers < tuple(int(part) for part in MINIMUM_CLIENT.split(".")):
        raise KaggleError(
            f"the kaggle client {version} is older than {MINIMUM_CLIENT}, which "
            "this kit needs (per-version status); run: pip install "
            f"'kaggle>={MINIMUM_CLIENT}'"
        )
    return version


def connect():
    """An authenticated `KaggleApi`, or KaggleError saying how to provide credentials."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        import kaggle

        api = kaggle.api
        if not getattr(api, "_authenticated", False):
            try:
                api.authenticate()
            except SystemExit:  # The client exits (SystemExit) when it finds no credentials.
                api = None
    if api is None:
        read_config()  # a kaggle.json that is there but malformed is named as such
        raise KaggleError(
            "no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY, or put "
            "kaggle.json in ~/.kaggle (Kaggle → Settings → API → Create token)"
        )
    return api


def read_config():
    """The kaggle.json mapping ({} when there is none); KaggleError naming the file when it is
    malformed (not JSON, or without "username" and "key")."""
    path = os.path.join(
        os.environ.get("KAGGLE_CONFIG_DIR", os.path.expanduser("~/.kaggle")), "kaggle.json"
    )
    if not os.path.exists(path):
        return {}
    fix = "download a new one: Kaggle → Settings → API → Create token"
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (ValueError, OSError) as error:  # JSONDecodeError and UnicodeDecodeError included
        raise KaggleError(f"{path} is malformed ({_first_line(error)}); {fix}") from None
    if not isinstance(document, dict) or not document.get("username") or not document.get("key"):
        raise KaggleError(f'{path} is malformed: it needs "username" and "key"; {fix}')
    return document


def http_status(error):
    """The HTTP status behind a client exception, if any."""
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def retry_after(error):
    """Seconds a 429's Retry-After header asks to wait (a number of seconds or an HTTP date),
    else None."""
    from email.utils import parsedate_to_datetime

    headers = getattr(getattr(error, "response", None), "headers", None) or {}
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def call(action, description, attempts=5, first_delay=1.0, sleep=time.sleep, repeatable=True):
    """Run `action()`, retrying 429/5xx, lost connections and timeouts with exponential backoff
    (a 429 waits as long as its Retry-After says); one-line errors otherwise.

    `repeatable=False` marks an action that changes something (a push): only a 429, which
    Kaggle answers before doing anything, is retried; anything that may have lost an accepted
    request's answer raises AnswerLost, for the caller to look before sending it again.
    """
    import requests

    delay = first_delay
    for attempt in range(1, attempts + 1):
        wait = delay
        try:
            return action()
        except requests.exceptions.HTTPError as error:
            wait = _http_retry_wait(error, description, delay, attempt == attempts, repeatable)
        except (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as error:
            # A read timeout (ReadTimeout) is not a ConnectionError, nor is a download cut short
            # (ChunkedEncodingError); each means no whole answer came.
            if not repeatable:
                raise AnswerLost(
                    f"{description}: no answer from Kaggle ({_first_line(error)})"
                ) from None
            if attempt == attempts:
                raise KaggleError(
                    f"{description}: cannot reach Kaggle, or it did not answer in "
                    f"time, {attempts} times ({_first_line(error)}); try again "
                    "later"
                ) from None
        except ValueError as error:
            # The client turns 401/403 on kernels status/output into ValueError.
            raise KaggleError(f"{description}: {_first_line(error)}") from None
        print(
            f"  {description}: retrying in {wait:.0f} s (attempt {attempt} of {attempts})",
            flush=True,
        )
        sleep(wait)
        delay *= 2
    raise AssertionError("unreachable")


def _http_retry_wait(error, description, delay, last_attempt, repeatable):
    """Seconds to wait before retrying a request Kaggle answered with an HTTP error (`delay`, or
    a 429's Retry-After); raises the one-line error when it is not to be retried."""
    status = http_status(error)
    if status in (401, 403):
        raise KaggleError(
            f"{description}: Kaggle refused the credentials (HTTP {status});"
            " check KAGGLE_USERNAME / KAGGLE_KEY"
        ) from None
    if status in RETRY_STATUSES and status != 429 and not repeatable:
        raise AnswerLost(f"{description}: HTTP {status}: {_first_line(error)}") from None
    if status not in RETRY_STATUSES or last_attempt:
        raise KaggleError(f"{description} failed: HTTP {status}: {_first_line(error)}") from None
    if status == 429 and retry_after(error) is not None:
        return min(retry_after(error), MAXIMUM_RETRY_AFTER)
    return delay


def error_body(path):
    """`is an HTTP error body (HTML: 403 Forbidden), not a CSV` when the downloaded file at `path`
    is an HTML page or a JSON document where a CSV, NPZ or PNG belongs (older clients saved
    such bodies as the output); else None."""
    kind = BINARY_OR_TABLE.get(Path(path).suffix.lower())
    if kind is None or not Path(path).is_file():
        return None
    with open(path, "rb") as handle:
        head = handle.read(4096)
    start = head.lstrip()[:1]
    if start not in (b"<", b"{", b"["):
        return None
    text = head.decode("utf-8", errors="replace")
    if start == b"<":
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        what = "HTML", title.group(1) if title else text
    else:
        message = re.search(r'"(?:message|error)"\s*:\s*"([^"]*)"', text)
        what = "JSON", message.group(1) if message else text
    excerpt = " ".join(what[1].split())[:80]
    return f"is an HTTP error body ({what[0]}: {excerpt}), not {kind}"


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def secrets(api=None):
    """Every credential value in use: environment, the client's config (kaggle.json), token."""
    values = [os.environ.get(name, "") for name in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")]
    if api is not None:
        values.append(str(getattr(api, "config_values", {}).get("key", "")))
    return [value for value in values if len(value) >= 8]  # never blank out short common words


def scrub(text, hidden):
    """Replace each credential value in `hidden` by *** (text that is printed or saved)."""
    for secret in hidden:
        text = text.replace(secret, "***")
    return text
