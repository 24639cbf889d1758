import pytest

from klio_assets.partitions import InvalidMediaId, validate_media_id


@pytest.mark.parametrize("media_id", ["track-1", "a", "A.b_c-1", "0abc", "x" * 128])
def test_valid_media_ids_pass_through(media_id):
    assert validate_media_id(media_id) == media_id


@pytest.mark.parametrize(
    ("media_id", "reason"),
    [
        ("", "empty"),
        ("x" * 129, "129 characters"),
        ("../etc", "unsafe for storage paths"),
        (".hidden", "unsafe for storage paths"),
        ("a/b", "unsafe for storage paths"),
        ("a b", "unsafe for storage paths"),
        ("tr\u00e4ck", "unsafe for storage paths"),
        ("-x", "unsafe for storage paths"),
        (7, "not a string"),
    ],
)
def test_invalid_media_ids_name_the_id_and_reason(media_id, reason):
    with pytest.raises(InvalidMediaId, match=reason):
        validate_media_id(media_id)
