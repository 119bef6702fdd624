"""Masking of secrets in log lines before they are stored or sent."""

from __future__ import annotations

from portal.cloud.masking import MASK, Masker, mask


def test_it_masks_the_environments_secret_values():
    masker = Masker({"db_password": "Tr0ub4dor&3", "nested": {"api": ["key-9f8e7d6c"]}})

    line = masker("connecting with Tr0ub4dor&3 and key-9f8e7d6c")

    assert line == f"connecting with {MASK} and {MASK}"


def test_it_masks_a_longer_secret_whole_when_it_contains_a_shorter_one():
    masker = Masker({"a": "abcd", "b": "abcdefgh"})

    assert masker("x abcdefgh y") == f"x {MASK} y"


def test_it_leaves_short_values_alone_so_logs_stay_readable():
    assert Masker({"replicas": "2", "flag": True})("2 replicas") == "2 replicas"


def test_it_masks_aws_keys():
    line = "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE session ASIAIOSFODNN7EXAMPLE"
    secret = "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

    assert mask(line) == f"AWS_ACCESS_KEY_ID={MASK} session {MASK}"
    assert mask(secret) == f"aws_secret_access_key = {MASK}"
    assert mask('"aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"') == (
        f'"aws_secret_access_key": "{MASK}"'
    )


def test_it_masks_bearer_and_common_tokens():
    github = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"

    assert mask("Authorization: Bearer eyJhbGciOi.J9.abc-_") == f"Authorization: Bearer {MASK}"
    assert mask(f"token {github} ok") == f"token {MASK} ok"
    assert mask("slack xoxb-1234567890-abcdefghij") == f"slack {MASK}"
    assert mask("https://hooks.slack.com/services/T000/B000/XXXX") == MASK
    assert mask("gantry gty_Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5") == f"gantry {MASK}"


def test_it_leaves_ordinary_lines_untouched():
    line = 'null_resource.service["fraud-api"]: Creation complete after 1s [id=5935725366]'

    assert mask(line) == line


def test_it_masks_a_chunk_of_lines_exactly_as_it_masks_each_line():
    """The engine masks whole chunks of output at once: no pattern may reach
    across a newline, so the result must equal masking line by line."""
    masker = Masker({"db_password": "Tr0ub4dor&3"})
    lines = [
        "Authorization: Bearer",
        "eyJhbGciOi.J9.abc-_ next line",
        "aws_secret_access_key =",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "BEARER abc.def and bearer xyz",
        "password Tr0ub4dor&3 AKIAIOSFODNN7EXAMPLE",
        "plain line",
    ]

    assert masker("\n".join(lines)).split("\n") == [masker(line) for line in lines]


def test_it_masks_each_line_of_a_multi_line_secret():
    key = "\n".join(
        [
            "-----BEGIN KEY-----",
            "MIIEvQIBADANBgkqhkiG9w0BAQEF",
            "AASCBKcwggSjAgEAAoIBAQC7",
            "-----END KEY-----",
        ]
    )
    masker = Masker({"deploy_key": key})

    assert masker("loaded AASCBKcwggSjAgEAAoIBAQC7 from env") == f"loaded {MASK} from env"
    assert MASK in masker(key) and "MIIEvQIBADANBgkqhkiG9w0BAQEF" not in masker(key)
