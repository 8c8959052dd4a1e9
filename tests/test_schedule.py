import numpy as np
import pytest

from petals.schedule import Schedule


def test_ramp_sustain_decay_values():
    schedule = Schedule(
        start=1e-5, maximum=4e-4, minimum=1e-5, ramp_up_epochs=3, sustain_epochs=2, decay=0.5
    )
    expected = [
        1e-5,
        1e-5 + 3.9e-4 / 3,
        1e-5 + 2 * 3.9e-4 / 3,
        4e-4,
        4e-4,
        4e-4,
        1e-5 + 3.9e-4 * 0.5,
        1e-5 + 3.9e-4 * 0.25,
    ]
    np.testing.assert_allclose(schedule.values(8), expected, rtol=1e-12)
    assert schedule(100) == pytest.approx(1e-5, rel=1e-6)


def test_no_ramp_starts_at_maximum():
    assert Schedule(0.0, 1.0, 0.0, 0, 0, 0.8)(0) == 1.0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((1, 1, 1, 1, 1, 0.0), r"decay must be in \(0, 1\], got 0.0"),
        ((1, 1, 1, 1, 1, 1.5), r"decay must be in \(0, 1\], got 1.5"),
        ((-1, 1, 1, 1, 1, 0.5), "learning rates must be ≥ 0"),
        ((1, 1, 1, -1, 1, 0.5), "ramp-up and sustain epochs must be ≥ 0"),
    ],
)
def test_invalid_schedules(arguments, message):
    with pytest.raises(ValueError, match=message):
        Schedule(*arguments)


def test_callback_sets_the_rate():
    import keras

    schedule = Schedule(0.1, 0.5, 0.0, 2, 0, 0.5)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    rates = []
    # Runs after the schedule's callback at each epoch's start: the rate the epoch trains with.
    recorder = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: rates.append(float(model.optimizer.learning_rate))
    )
    model.fit(
        np.zeros((2, 2), "float32"),
        np.zeros((2, 1), "float32"),
        epochs=4,
        verbose=0,
        callbacks=[schedule.callback(), recorder],
    )
    np.testing.assert_allclose(rates, schedule.values(4), rtol=1e-6)
    assert rates == pytest.approx([0.1, 0.3, 0.5, 0.25])
