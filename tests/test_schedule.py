import numpy as np
import pytest

from petals.schedule import Schedule


def test_ramp_sustain_decay_values():
    schedule = Schedule(start=1e-5, maximum=4e-4, minimum=1e-5, ramp_up_epochs=3,
                        sustain_epochs=2, decay=0.5)
    expected = [1e-5, 1e-5 + 3.9e-4 / 3, 1e-5 + 2 * 3.9e-4 / 3, 4e-4, 4e-4,
                4e-4, 1e-5 + 3.9e-4 * 0.5, 1e-5 + 3.9e-4 * 0.25]
    np.testing.assert_allclose(schedule.values(8), expected, rtol=1e-12)
    assert schedule(100) == pytest.approx(1e-5, rel=1e-6)


def test_no_ramp_starts_at_maximum():
    assert Schedule(0.0, 1.0, 0.0, 0, 0, 0.8)(0) == 1.0


@pytest.mark.parametrize("arguments", [(1, 1, 1, 1, 1, 0.0), (1, 1, 1, 1, 1, 1.5),
                                       (-1, 1, 1, 1, 1, 0.5), (1, 1, 1, -1, 1, 0.5)])
def test_invalid_schedules(arguments):
    with pytest.raises(ValueError):
        Schedule(*arguments)


def test_callback_sets_the_rate():
    callback = Schedule(0.1, 0.5, 0.0, 2, 0, 0.5).callback()
    assert callback.schedule(1) == pytest.approx(0.3)
