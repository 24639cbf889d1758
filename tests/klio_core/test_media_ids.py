"""The media-ID rule and the storage-name rule (klio_core.media_ids)."""

import pytest

from klio_core.media_ids import InvalidMediaId, media_id_from_storage_name, storage_name, validate_media_id

AS_USERS_HAVE_THEM = [
    "track-1", "a", "0abc", "x" * 200, "x" * 127 + "/" + "y" * 128, "spotify:track:4uLU6hMCjMI75M1A2tKUQC",
    "isrc:USRC17607839",
    "label/2024/track-01", "a/b/c", "Track", "track", "TRACK", "a", "a/b", "a b", "tr\u00e4ck", "tra\u0308ck",
    "\u66f2/\u7b2c\u4e00", "-x", ".hidden", "a/.b", "50% off", "a%2Fb", "emoji \U0001f3b5", "..x", "x..",
]


@pytest.mark.parametrize("media_id", AS_USERS_HAVE_THEM)
def test_ids_as_users_have_them_are_accepted_and_stored_reversibly(media_id):
    assert validate_media_id(media_id) == media_id
    name = storage_name(media_id)
    assert media_id_from_storage_name(name) == media_id
    for segment in name.split("/"):
        assert segment not in ("", ".", "..") and not segment.startswith(".")
        assert set(segment) <= set("abcdefghijklmnopqrstuvwxyz0123456789-_.%ABCDEF")


def test_storage_names_never_collide_even_where_case_is_folded():
    ids = sorted(set(AS_USERS_HAVE_THEM))
    names = [storage_name(i) for i in ids]
    assert len({n.lower() for n in names}) == len(ids)  # a case-insensitive file system keeps them apart
    assert storage_name("spotify:track:x") == "spotify%3Atrack%3Ax"
    assert storage_name("Track-1") == "%54rack-1"
    assert storage_name("label/2024/track-01") == "label/2024/track-01"
    assert storage_name(".hidden") == "%2Ehidden"


def test_ids_of_the_first_rule_keep_their_paths():
    for media_id in ("demo-000-tone", "track-01", "a.b_c-1", "0abc"):
        assert storage_name(media_id) == media_id


@pytest.mark.parametrize(("media_id", "reason"), [
    ("", "empty media ID"),
    ("x" * 257, "257 characters long"),
    ("../etc", "'..' path segment"),
    ("a/../b", "'..' path segment"),
    ("a//b", "empty, '.' or '..' path segment"),
    ("/a", "empty"),
    ("a/", "empty"),
    ("./a", "'.'"),
    ("a...b", "Dagster reads as a partition range"),
    ("tab\there", "non-printable"),
    ("nul\x00", "non-printable"),
    ("line\nbreak", "non-printable"),
    (" padded", "white space"),
    ("\u66f2" * 100, "too long to store"),
    (7, "not a string"),
])
def test_invalid_media_ids_name_the_id_and_reason(media_id, reason):
    with pytest.raises(InvalidMediaId, match=reason.replace(".", r"\.").replace("(", r"\(")):
        validate_media_id(media_id)
