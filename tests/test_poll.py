"""kit.poll: backoff while nothing changes, back to the first interval on a change, timeout."""

from kit.poll import poll


class Clock:
    """A clock that moves only when the loop sleeps; records each sleep."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def script(*answers):
    """check() answering (done, changed) from the list, in order."""
    answers = list(answers)
    return lambda: answers.pop(0)


def test_backs_off_to_ten_times_the_interval_and_resets_on_a_change():
    clock = Clock()
    check = script(*[(False, False)] * 8, (False, True), (False, False), (True, False))
    assert poll(check, 10.0, clock=clock, sleep=clock.sleep) is True
    assert clock.sleeps == [15.0, 22.5, 33.75, 50.625, 75.9375, 100.0, 100.0, 100.0, 10.0, 15.0]


def test_timeout_returns_false_after_at_least_one_check():
    clock = Clock()
    calls = []

    def check():
        calls.append(clock())
        return False, True

    assert poll(check, 10.0, timeout=25.0, clock=clock, sleep=clock.sleep) is False
    assert calls == [0.0, 10.0, 20.0, 30.0]
    assert poll(lambda: (False, False), 1.0, timeout=0, clock=clock, sleep=clock.sleep) is False


def test_done_at_once_never_sleeps():
    clock = Clock()
    assert poll(lambda: (True, False), 10.0, timeout=0, clock=clock, sleep=clock.sleep) is True
    assert clock.sleeps == []
