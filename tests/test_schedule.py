"""course_lib.schedule: the recorder lab2's fit_phase passes to each phase's fit()."""

import course_lib  # noqa: F401  (selects the torch backend before keras)
import keras
import numpy as np
import pytest

from course_lib.schedule import ScheduleRecorder, WeightAverage, largest_change


def test_largest_change_is_the_largest_absolute_difference():
    before = [np.zeros((2, 2)), np.ones(3)]
    after = [np.array([[0.0, -0.5], [0.25, 0.0]]), np.ones(3)]
    assert largest_change(before, after) == 0.5
    assert largest_change([], []) == 0.0


def test_largest_change_refuses_lists_of_different_lengths():
    with pytest.raises(ValueError, match="Received: 1 and 0"):
        largest_change([np.zeros(1)], [])


def test_recorder_refuses_bad_arguments():
    with pytest.raises(TypeError, match="Received: list"):
        ScheduleRecorder([], "frozen")
    with pytest.raises(TypeError, match="Received: 3"):
        ScheduleRecorder({}, 3)


def test_recorder_names_the_missing_backbone():
    inputs = keras.Input(shape=(2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="sub-model named 'backbone'"):
        model.fit(np.zeros((4, 2)), np.zeros((4, 1)), verbose=0, callbacks=[ScheduleRecorder({}, "frozen")])


class _RawWeights(keras.callbacks.Callback):
    """Writes down the model's weights at the start and end of every training batch."""

    def __init__(self):
        super().__init__()
        self.begin, self.end = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.begin.append(self.model.get_weights())

    def on_train_batch_end(self, batch, logs=None):
        self.end.append(self.model.get_weights())


def _linear_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def _data(count=32):
    generator = np.random.default_rng(1)
    return generator.normal(size=(count, 3)).astype("float32"), generator.normal(size=(count, 2)).astype("float32")


def test_weight_average_refuses_a_momentum_outside_0_1():
    for momentum in (1.0, -0.1, "0.9", True, None):
        with pytest.raises(ValueError, match=f"Received: momentum={momentum!r}"):
            WeightAverage(momentum)


def test_weight_average_keeps_the_moving_average_of_the_raw_weights():
    model = _linear_model()
    x, y = _data()
    start = model.get_weights()
    raw = _RawWeights()
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[raw, WeightAverage(0.6)])
    expected = start
    for step, weights in enumerate(raw.end, start=1):
        momentum = min(0.6, step / (step + 1))  # the first step: the mean of start and step 1
        expected = [momentum * average + (1 - momentum) * value for average, value in zip(expected, weights)]
    assert len(raw.end) == 8
    for kept, wanted, last_raw in zip(model.get_weights(), expected, raw.end[-1]):
        np.testing.assert_allclose(kept, wanted, rtol=1e-5, atol=1e-6)
        assert not np.allclose(kept, last_raw), "the model should end with the average, not the raw weights"
    # The optimizer goes on from the raw weights: the second epoch starts where the first ended.
    for begin, end in zip(raw.begin[4], raw.end[3]):
        np.testing.assert_array_equal(begin, end)


def test_a_short_run_averages_all_its_steps_equally():
    model = _linear_model()
    x, y = _data(24)
    start = model.get_weights()
    raw = _RawWeights()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[raw, WeightAverage(0.99)])
    # 3 steps, far fewer than the 100 a momentum of 0.99 spans: the plain mean of the 4 weight sets.
    for kept, *sets in zip(model.get_weights(), start, *raw.end):
        np.testing.assert_allclose(kept, np.mean(sets, axis=0), rtol=1e-5, atol=1e-6)


def test_validation_and_the_callbacks_after_it_see_the_averaged_weights():
    model = _linear_model()
    x, y = _data(48)
    history = model.fit(
        x[:32], y[:32], validation_data=(x[32:], y[32:]), batch_size=8, epochs=3, verbose=0,
        callbacks=[WeightAverage(0.8), keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)],
    )
    best = min(history.history["val_loss"])
    np.testing.assert_allclose(model.evaluate(x[32:], y[32:], verbose=0), best, rtol=1e-5)


def test_weight_average_with_momentum_0_changes_nothing():
    x, y = _data()
    plain, averaged = _linear_model(), _linear_model()
    plain.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    averaged.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[WeightAverage(0.0)])
    for a, b in zip(plain.get_weights(), averaged.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
