import pytest

from kiln.infra.redact import has_secrets, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("iris", "iris"),
        ("data/train.csv", "data/train.csv"),
        ("s3://bucket/train.csv", "s3://bucket/train.csv"),
        ("http://user:secret@host/d.csv", "http://***@host/d.csv"),
        ("https://token@host:8443/d.csv", "https://***@host:8443/d.csv"),
        ("http://host/d.csv?token=abc&v=2", "http://host/d.csv?token=***&v=***"),
        ("https://h/d.csv?X-Amz-Signature=f00d#k=v", "https://h/d.csv?X-Amz-Signature=***#k=***"),
        ("http://host/d.csv#sekrit", "http://host/d.csv#***"),
        (
            "cannot read http://u:p@h/a.csv?t=1: 401, url='http://u:p@h/a.csv?t=1'",
            "cannot read http://***@h/a.csv?t=***: 401, url='http://***@h/a.csv?t=***'",
        ),
    ],
)
def test_redact_masks_credentials_and_query_values(text, expected):
    assert redact(text) == expected
    assert has_secrets(text) == (text != expected)


def test_redact_is_idempotent():
    once = redact("http://user:pw@host/x?a=b")
    assert redact(once) == once
