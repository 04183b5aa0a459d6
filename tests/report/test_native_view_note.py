"""The shape-bias figure's caption says how each model saw the stimuli (docs/views.md)."""
from __future__ import annotations

from beyond_inet.report.figures import native_view_note


def test_caption_names_each_models_rule():
    arts = {("shape-bias", "a", "shape-bias/native-view"): {"cue-conflict": {"rule": "stimuli as they are",
                                                                           "input_size": 224}},
            ("shape-bias", "b", "shape-bias/native-view"): {"cue-conflict": {"rule": "whole stimulus resized to "
                                                                           "the input", "input_size": 240}}}
    note = native_view_note(arts, ["a", "b", "c"])
    assert "a: stimuli as they are at 224 px" in note and "b: whole stimulus resized to the input at 240 px" in note
    assert "c:" not in note and native_view_note({}, ["a"]) == ""
