import pytest
from hypothesis import given
from hypothesis import strategies as st

from mctl.common.quantity import (
    QuantityError,
    format_bytes_short,
    format_cpu,
    format_memory,
    parse_cpu,
    parse_memory,
)

Ki, Mi, Gi, Ti = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("value", "millis"),
    [
        (2, 2000),
        (0, 0),
        (0.5, 500),
        (0.1, 100),
        (1.25, 1250),
        ("500m", 500),
        ("1m", 1),
        ("0.5", 500),
        ("2", 2000),
        (".5", 500),
        ("1.", 1000),
        ("0.001", 1),
        ("+1", 1000),
        ("1500m", 1500),
    ],
)
def test_parse_cpu(value, millis):
    assert parse_cpu(value) == millis


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", '"abc" is not a quantity'),
        ("", '"" is not a quantity'),
        ("500 m", '"500 m" is not a quantity'),
        ("500M", '"500M" is not a quantity'),
        ("1e3", '"1e3" is not a quantity'),
        (" 1", '" 1" is not a quantity'),
        ("1\n", '"1\\n" is not a quantity'),
        (True, "true is not a quantity"),
        (False, "false is not a quantity"),
        (None, "null is not a quantity"),
        ([1], "[1] is not a quantity"),
        (float("nan"), "NaN is not a quantity"),
        (float("inf"), "Infinity is not a quantity"),
        (-1, "-1 must not be negative"),
        ("-500m", '"-500m" must not be negative'),
        (-0.5, "-0.5 must not be negative"),
        ("0.5m", '"0.5m" is more precise than 1m'),
        ("0.0001", '"0.0001" is more precise than 1m'),
        (0.0005, "0.0005 is more precise than 1m"),
        (2**62, f"{2**62} is too large"),
    ],
)
def test_parse_cpu_rejects(value, message):
    with pytest.raises(QuantityError) as e:
        parse_cpu(value)
    assert str(e.value) == message


def test_quantity_error_is_a_value_error():
    assert issubclass(QuantityError, ValueError)


@pytest.mark.parametrize(
    ("value", "n"),
    [
        (0, 0),
        (1024, 1024),
        (1024.0, 1024),
        ("1024", 1024),
        ("1Ki", Ki),
        ("64Mi", 64 * Mi),
        ("1Gi", Gi),
        ("2Ti", 2 * Ti),
        ("1Pi", 1024**5),
        ("1Ei", 1024**6),
        ("1k", 1000),
        ("1K", 1000),
        ("500M", 500_000_000),
        ("2G", 2 * 10**9),
        ("1T", 10**12),
        ("1P", 10**15),
        ("1E", 10**18),
        ("1.5Gi", 3 * Gi // 2),
        ("0.5Ki", 512),
        ("1.5k", 1500),
        ("7Ei", 7 * 1024**6),
    ],
)
def test_parse_memory(value, n):
    assert parse_memory(value) == n


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("64Mb", '"64Mb" is not a quantity'),
        ("64MB", '"64MB" is not a quantity'),
        ("64mi", '"64mi" is not a quantity'),
        ("64m", '"64m" is not a quantity'),
        ("64 Mi", '"64 Mi" is not a quantity'),
        ("Mi", '"Mi" is not a quantity'),
        ("", '"" is not a quantity'),
        ("1e6", '"1e6" is not a quantity'),
        ("0x10", '"0x10" is not a quantity'),
        (True, "true is not a quantity"),
        (None, "null is not a quantity"),
        ({"a": 1}, '{"a": 1} is not a quantity'),
        (-1, "-1 must not be negative"),
        ("-64Mi", '"-64Mi" must not be negative'),
        ("1.5", '"1.5" is not a whole number of bytes'),
        (1.5, "1.5 is not a whole number of bytes"),
        ("0.1Ki", '"0.1Ki" is not a whole number of bytes'),
        ("8Ei", '"8Ei" is too large'),
        (2**63, f"{2**63} is too large"),
    ],
)
def test_parse_memory_rejects(value, message):
    with pytest.raises(QuantityError) as e:
        parse_memory(value)
    assert str(e.value) == message


def test_int64_max_is_accepted():
    assert parse_memory(2**63 - 1) == 2**63 - 1


@pytest.mark.parametrize(
    ("millis", "text"),
    [(0, "0"), (1, "1m"), (500, "500m"), (1000, "1"), (1500, "1500m"), (2000, "2")],
)
def test_format_cpu(millis, text):
    assert format_cpu(millis) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (1, "1"),
        (1000, "1000"),
        (1024, "1Ki"),
        (1536, "1536"),
        (64 * Mi, "64Mi"),
        (1536 * Mi, "1536Mi"),
        (Gi, "1Gi"),
        (3 * Ti, "3Ti"),
        (1024**6, "1Ei"),
        (Mi + 1, str(Mi + 1)),
    ],
)
def test_format_memory(n, text):
    assert format_memory(n) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (512, "512"),
        (1023, "1023"),
        (1024, "1Ki"),
        (1536, "1.5Ki"),
        (int(12.3 * Mi), "12.3Mi"),
        (640 * Mi, "640Mi"),
        (Mi - 1, "1Mi"),  # 1023.999Ki would print as "1024Ki"
        (int(99.97 * Mi), "100Mi"),
        (3 * Gi // 2, "1.5Gi"),
        (5 * Ti, "5Ti"),
    ],
)
def test_format_bytes_short(n, text):
    assert format_bytes_short(n) == text


@given(st.integers(min_value=0, max_value=2**40))
def test_cpu_round_trip(millis):
    assert parse_cpu(format_cpu(millis)) == millis


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_memory_round_trip(n):
    assert parse_memory(format_memory(n)) == n
