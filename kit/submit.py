"""A submission file sent to the competition."""

from kit.kaggle_client import call, connect
from petals import COMPETITION


def submit(submission_path, message, api=None, competition=COMPETITION):
    """Submit a file to the competition; returns the server's message."""
    api = api or connect()
    response = call(
        lambda: api.competition_submit(str(submission_path), message, competition, quiet=True),
        f"submit {submission_path}",
    )
    return getattr(response, "message", "") or "submitted"
