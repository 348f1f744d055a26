import pytest

from kiln.infra.redact import has_secrets, redact, scrub, secrets_in


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


def test_a_bare_scheme_in_a_message_is_left_alone():
    text = "use a local path or an fsspec URL such as s3://, gs://, https://"
    assert redact(text) == text


def test_scrub_masks_a_command_line_s_credentials_wherever_they_appear():
    secrets = secrets_in(["train", "--data", "s3://AKIAKEY1:SECRETpw@bucket/x.csv?sig=abcd1"])
    message = 'Invalid bucket name "AKIAKEY1:SECRETpw@bucket"; key AKIAKEY1, sig abcd1'
    scrubbed = scrub(message, secrets)
    assert "AKIAKEY1" not in scrubbed and "SECRETpw" not in scrubbed and "abcd1" not in scrubbed
    assert scrubbed == 'Invalid bucket name "***@bucket"; key ***, sig ***'
