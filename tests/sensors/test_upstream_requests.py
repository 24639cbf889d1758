"""Held bottom-up events across code locations (``sensors.upstream_requests``): what an
announcement does to one, and that the sensor's cursor keeps them."""

from klio_core.media_store import LocalMediaStore
from klio_core.wire import MediaEvent
from sensors.pubsub_sensor import TickState
from sensors.upstream_requests import Held, answer, missing_inputs

TEAM_B = {"tempo": ("waveform",), "loudness": ("waveform",), "notes_summary": ("note_events", "tempo")}


def test_the_missing_inputs_are_those_of_the_other_location_that_do_not_exist(tmp_path):
    store = LocalMediaStore(str(tmp_path))
    event = MediaEvent("m", recipients=("notes_summary",))
    assert missing_inputs(event, TEAM_B, store) == ("note_events", "waveform")
    store.write_bytes(store.record_uri("waveform", "m"), b"{}")
    assert missing_inputs(event, TEAM_B, store) == ("note_events",)
    assert missing_inputs(MediaEvent("m", recipients=("tempo",)), TEAM_B, store) == ()


def test_a_held_event_runs_when_all_it_waits_for_is_announced_and_drops_on_the_first_not_made():
    held = Held(("notes_summary",), True, ("note_events", "waveform"))
    still, outcome = answer(held, "m", "waveform", "materialized", "")
    assert still == Held(("notes_summary",), True, ("note_events",)) and not outcome.ready
    gone, outcome = answer(still, "m", "note_events", "skipped", "")
    assert gone is None and outcome.ready and outcome.event == MediaEvent("m", force=True, recipients=("notes_summary",))
    gone, outcome = answer(held, "m", "note_events", "failed", "the model ran out of memory")
    assert gone is None and not outcome.ready
    assert outcome.not_made == "input 'note_events' was failed by its code location: the model ran out of memory"


def test_the_cursor_keeps_held_events():
    state = TickState(held={"m": Held(("tempo",), False, ("waveform",))})
    assert TickState.load(state.dump()).held == state.held
    assert TickState.load(TickState().dump()).held == {}
