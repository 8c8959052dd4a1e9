"""The real `kaggle` client, imported lazily and wrapped: retries, clear errors, no leaks.

`import kaggle` authenticates at import time; without credentials it prints its help text and
creates a config folder. So it is imported only by the verbs that talk to Kaggle, with its
chatter captured, and a missing credential becomes one line saying what to set.
"""

import contextlib
import io
import json
import os
import time

# HTTP statuses worth another try: rate limiting and server-side failures.
RETRY_STATUSES = {429, 500, 502, 503, 504}


class KaggleError(RuntimeError):
    """A Kaggle request failed; the message is one line meant for the user."""


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
        raise KaggleError("no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY, or put "
                          "kaggle.json in ~/.kaggle (Kaggle → Settings → API → Create token)")
    return api


def read_config():
    """The kaggle.json mapping ({} when there is none); KaggleError naming the file when it is
    malformed (not JSON, or without "username" and "key")."""
    path = os.path.join(os.environ.get("KAGGLE_CONFIG_DIR", os.path.expanduser("~/.kaggle")),
                        "kaggle.json")
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


def call(action, description, attempts=5, first_delay=1.0, sleep=time.sleep):
    """Run `action()`, retrying 429/5xx with exponential backoff; one-line errors otherwise."""
    import requests

    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except requests.exceptions.HTTPError as error:
            status = http_status(error)
            if status in (401, 403):
                raise KaggleError(f"{description}: Kaggle refused the credentials (HTTP {status});"
                                  " check KAGGLE_USERNAME / KAGGLE_KEY") from None
            if status not in RETRY_STATUSES or attempt == attempts:
                raise KaggleError(f"{description} failed: HTTP {status}: "
                                  f"{_first_line(error)}") from None
        except requests.exceptions.ConnectionError as error:
            if attempt == attempts:
                raise KaggleError(f"{description}: cannot reach Kaggle ({_first_line(error)})") \
                    from None
        except ValueError as error:
            # The client turns 401/403 on kernels status/output into ValueError.
            raise KaggleError(f"{description}: {_first_line(error)}") from None
        print(f"  {description}: retrying in {delay:.0f} s (attempt {attempt} of {attempts})")
        sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


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
