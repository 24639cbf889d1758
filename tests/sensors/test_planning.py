import pytest

from klio_core.wire import MediaEvent
from resources.dagster_tags import RANGE_END_TAG, RANGE_START_TAG
from sensors.planning import Received, plan_runs, selection_for

UPSTREAM = {"waveform": (), "spectrogram": ("waveform",), "mel_spectrogram": ("waveform",),
            "mfcc": ("mel_spectrogram",), "mfcc_plot": ("mfcc", "waveform")}
ALL = tuple(sorted(UPSTREAM))


def received(*events: MediaEvent) -> list[Received]:
    return [Received(f"m{i}", e) for i, e in enumerate(events)]


def test_selection_top_down_and_bottom_up():
    [top_down, bottom_up, both] = received(MediaEvent("t"), MediaEvent("t", recipients=("mfcc",)),
                                           MediaEvent("t", recipients=("spectrogram", "waveform")))
    assert selection_for(top_down, UPSTREAM) == ALL
    assert selection_for(bottom_up, UPSTREAM) == ("mel_spectrogram", "mfcc", "waveform")
    assert selection_for(both, UPSTREAM) == ("spectrogram", "waveform")


# A second team's assets on top of the first team's waveform and note_events
TEAM_B = {"tempo": ("waveform",), "loudness": ("waveform",), "tempo_curve": ("tempo",),
          "notes_summary": ("note_events", "tempo")}


def test_an_announced_output_of_another_location_selects_what_reads_it():
    assert selection_for(Received("m", MediaEvent("t"), announced="waveform"), TEAM_B) == (
        "loudness", "notes_summary", "tempo", "tempo_curve")
    assert selection_for(Received("m", MediaEvent("t"), announced="note_events"), TEAM_B) == ("notes_summary",)
    assert selection_for(Received("m", MediaEvent("t"), announced="mfcc"), TEAM_B) == ()
    new_ids, plans = plan_runs([Received("m", MediaEvent("t"), announced="mfcc")], [], TEAM_B, max_ids_per_run=2)
    assert (new_ids, plans) == ([], [])  # nothing here reads it: no partition, no run


def test_new_ids_arriving_together_become_as_few_runs_as_the_cap_allows():
    # IDs deliberately not in sorted order: the range must follow arrival (= partition) order.
    ids = ["t-9", "t-3", "t-7", "t-1", "t-5"]
    new_ids, plans = plan_runs(received(*map(MediaEvent, ids)), ["old-1"], UPSTREAM, max_ids_per_run=2)
    assert new_ids == ids
    assert [p.media_ids for p in plans] == [("t-9", "t-3"), ("t-7", "t-1"), ("t-5",)]
    assert all(p.assets == ALL and not p.force and not p.ping for p in plans)
    request = plans[0].run_request()
    assert request.tags[RANGE_START_TAG] == "t-9"
    assert request.tags[RANGE_END_TAG] == "t-3"
    assert {k.to_user_string() for k in request.asset_selection} == set(ALL)


def test_batches_by_mode_and_keeps_each_batch_contiguous():
    events = [MediaEvent("a"), MediaEvent("b", recipients=("mfcc",)), MediaEvent("c"),
              MediaEvent("d", force=True), MediaEvent("e", recipients=("mfcc",)), MediaEvent("f", ping=True)]
    new_ids, plans = plan_runs(received(*events), [], UPSTREAM, max_ids_per_run=100)
    assert new_ids == ["a", "c", "b", "e", "d", "f"]
    by_ids = {p.media_ids: p for p in plans}
    assert set(by_ids) == {("a", "c"), ("b", "e"), ("d",), ("f",)}
    assert by_ids[("b", "e")].assets == ("mel_spectrogram", "mfcc", "waveform")
    assert by_ids[("d",)].force and by_ids[("d",)].run_request().tags["klio/force"] == "true"
    assert by_ids[("f",)].ping and by_ids[("f",)].run_request().tags["klio/ping"] == "true"


def test_existing_ids_are_not_added_and_runs_only_span_adjacent_partitions():
    registered = ["r0", "r1", "r2", "r3", "r4"]
    new_ids, plans = plan_runs(received(MediaEvent("r3", force=True), MediaEvent("r1", force=True),
                                        MediaEvent("r2", force=True), MediaEvent("new", force=True)),
                               registered, UPSTREAM, max_ids_per_run=10)
    assert new_ids == ["new"]
    assert [p.media_ids for p in plans] == [("r1", "r2", "r3"), ("new",)]


def test_duplicate_ids_run_once_and_the_run_key_names_every_message():
    events = received(MediaEvent("a"), MediaEvent("a"), MediaEvent("b"))
    _, plans = plan_runs(events, [], UPSTREAM, max_ids_per_run=10)
    assert len(plans) == 1 and plans[0].media_ids == ("a", "b")
    assert sorted(plans[0].message_keys) == ["m0", "m1", "m2"]
    _, again = plan_runs(list(reversed(events)), [], UPSTREAM, max_ids_per_run=10)
    assert again[0].media_ids == ("b", "a")
    _, same = plan_runs(events, [], UPSTREAM, max_ids_per_run=10)
    assert same[0].run_key == plans[0].run_key
    _, other = plan_runs(received(MediaEvent("a"), MediaEvent("b")), [], UPSTREAM, max_ids_per_run=10)
    assert other[0].run_key != plans[0].run_key


@pytest.mark.parametrize("cap", [1, 3, 1000])
def test_every_id_is_planned_exactly_once(cap):
    ids = [f"id-{i}" for i in range(25)]
    new_ids, plans = plan_runs(received(*map(MediaEvent, ids)), [], UPSTREAM, max_ids_per_run=cap)
    planned = [i for p in plans for i in p.media_ids]
    assert planned == ids == new_ids
    assert all(len(p.media_ids) <= cap for p in plans)
    assert len(plans) == -(-25 // cap)


def test_with_only_the_received_ids_looked_up_no_registered_id_joins_a_run_of_new_ones():
    """The sensor looks up just the received IDs when at most one is registered: where that one
    stands in the catalogue is unknown, so it is a run of its own; the new ones, appended
    together, stay one range."""
    new_ids, plans = plan_runs(received(MediaEvent("old"), MediaEvent("n1"), MediaEvent("n2")),
                               ["old"], UPSTREAM, max_ids_per_run=10, whole_catalogue=False)
    assert new_ids == ["n1", "n2"]
    assert sorted(p.media_ids for p in plans) == [("n1", "n2"), ("old",)]


def test_an_id_dropped_upstream_gets_a_run_of_its_own_that_says_why():
    why = "input 'waveform' was dropped by its code location: source media not found"
    dropped = Received("m1", MediaEvent("a", recipients=("tempo",)), not_made=why)
    ready = Received("m2", MediaEvent("b", recipients=("tempo",)))
    _, plans = plan_runs([dropped, ready], [], TEAM_B, max_ids_per_run=10)
    by_id = {plan.media_ids: plan.run_request() for plan in plans}
    assert set(by_id) == {("a",), ("b",)}  # the same assets, but not one run
    assert by_id[("a",)].tags["klio/upstream_not_made"] == why
    assert "klio/upstream_not_made" not in by_id[("b",)].tags
