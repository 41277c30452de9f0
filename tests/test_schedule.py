"""course_lib.schedule: the recorder lab2's fit_phase passes to each phase's fit()."""

import course_lib  # noqa: F401  (selects the torch backend before keras)
import keras
import numpy as np
import pytest

from course_lib.schedule import ScheduleRecorder, largest_change


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
