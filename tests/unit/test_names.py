import pytest

from mctl.common.names import (
    DNS_LABEL,
    REPLICA_SUFFIX_ALPHABET,
    quote,
    validate_dns_label,
    validate_label_key,
    validate_label_value,
)


@pytest.mark.parametrize("name", ["web", "a", "0", "web-1", "a-b-c", "9lives", "x" * 63])
def test_valid_dns_labels(name):
    assert validate_dns_label(name) is None
    assert DNS_LABEL.match(name)


@pytest.mark.parametrize(
    "name", ["Web", "-web", "web-", "web_1", "web.1", "wéb", "web 1", "web\n", "a--"]
)
def test_invalid_dns_labels(name):
    problem = validate_dns_label(name)
    assert problem is not None
    assert problem.startswith(f'"{name}" is not a DNS label'.replace("\n", "\\n"))
    assert not DNS_LABEL.match(name)


def test_dns_label_trailing_newline_is_not_accepted_by_the_regex():
    # "$" would match before a final newline; the pattern must not.
    assert DNS_LABEL.match("web\n") is None


def test_empty_dns_label():
    assert validate_dns_label("") == "must not be empty"


def test_dns_label_too_long():
    assert validate_dns_label("x" * 64) == f'"{"x" * 64}" is longer than 63 characters'


def test_replica_suffix_alphabet():
    assert len(REPLICA_SUFFIX_ALPHABET) == len(set(REPLICA_SUFFIX_ALPHABET)) == 27
    assert not set(REPLICA_SUFFIX_ALPHABET) & set("aeiou013")
    # A suffix made of it keeps a replica name a DNS label.
    assert validate_dns_label("web-" + REPLICA_SUFFIX_ALPHABET) is None


@pytest.mark.parametrize(
    "key",
    ["app", "App_1", "a.b-c", "example.com/tier", "a.b.c/x", "x" * 63, "d" * 253 + "/x"],
)
def test_valid_label_keys(key):
    assert validate_label_key(key) is None


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "the name must be"),
        ("-app", "the name must be"),
        ("app-", "the name must be"),
        ("a b", "the name must be"),
        ("x" * 64, "the name must be"),
        ("example.com/", "the name must be"),
        ("/app", "has a prefix that is not a DNS subdomain"),
        ("Example.com/app", "has a prefix that is not a DNS subdomain"),
        ("a/b/c", "has a prefix that is not a DNS subdomain"),
        ("d" * 254 + "/x", "has a prefix that is not a DNS subdomain"),
    ],
)
def test_invalid_label_keys(key, problem):
    result = validate_label_key(key)
    assert result is not None
    assert result.startswith(f"label key {quote(key)} ")
    assert problem in result


def test_long_values_are_cut_in_messages():
    # An API client may send a name of any length; the message stays one short line.
    assert quote("a" * 80) == '"' + "a" * 80 + '"'
    assert quote("a" * 81) == '"' + "a" * 80 + '..."'
    assert quote("x\ny") == '"x\\ny"'
    problem = validate_dns_label("x" * 100_000)
    assert problem == f'"{"x" * 80}..." is longer than 63 characters'


@pytest.mark.parametrize("value", ["", "web", "v1.2_3-x", "A", "x" * 63])
def test_valid_label_values(value):
    assert validate_label_value(value) is None


@pytest.mark.parametrize("value", ["-x", "x-", "a b", "a/b", "x" * 64])
def test_invalid_label_values(value):
    result = validate_label_value(value)
    assert result is not None
    assert result.startswith(f'label value "{value}" is not valid')
