"""The one poll loop of the kit: watching a Kaggle version (`collect.wait`) and a sweep
(`cycle.SweepRun.run`) both go through `poll`."""

import time

# While nothing changes, the interval grows by this factor up to BACKOFF_CAP times the first one.
BACKOFF = 1.5
BACKOFF_CAP = 10


def poll(check, interval, timeout=None, clock=time.monotonic, sleep=time.sleep):
    """Call `check()` until it reports done; True then, False once `timeout` seconds passed.

    `check()` returns (done, changed). Between calls the loop sleeps `interval` seconds, growing
    by half each time nothing changed, up to ten times `interval`; a change sets it back, so a
    sweep whose versions finish one after another is watched closely. The timeout is checked
    after each call, so `check` always runs at least once.
    """
    started = clock()
    wait = interval
    while True:
        done, changed = check()
        if done:
            return True
        if timeout is not None and clock() - started > timeout:
            return False
        wait = interval if changed else min(wait * BACKOFF, BACKOFF_CAP * interval)
        sleep(wait)
