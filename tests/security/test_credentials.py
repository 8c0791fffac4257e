"""Credential isolation, as a property: an answer computed for one user is never served to another.

The app echoes the credentials it saw. For generated pairs of different
``Authorization``/``Cookie`` values, each user must get exactly the echo of
their own request, never the other's; and the configured ``vary`` list decides
which headers separate answers: a header in it isolates, one outside it is not
given to the app at all, so one answer serves both users and holds neither value.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.behaviour.harness import Harness, Result
from tests.security import apps
from tests.security.support import PROTOCOLS, drain, from_app, opened

CREDENTIALS = settings(max_examples=60, deadline=None)

#: Header values as a server hands them over: any byte (latin-1 text), empty included.
VALUE = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=40)
#: A user: an optional Authorization and an optional Cookie.
USER = st.tuples(st.none() | VALUE, st.none() | VALUE)

Headers = list[tuple[str, str]]


def headers_of(values: dict[str, str | None]) -> Headers:
    return [(name, value) for name, value in values.items() if value is not None]


def echo_of(values: dict[str, str | None], vary: list[str] | None = None) -> bytes:
    """What ``/whoami`` answers to a request carrying these headers, of which the app sees the keyed ones only."""
    keyed = {name.lower() for name in (vary if vary is not None else ["authorization", "cookie"])}
    seen = {
        name.lower(): None if value is None or name.lower() not in keyed else value.encode("latin-1")
        for name, value in values.items()
    }
    return apps.whoami(seen)


def fetch(harness: Harness, headers: Headers) -> Result:
    """GET /whoami as this user, running the queued job if it is a miss."""
    first = harness.request("GET", "/whoami", headers=headers)
    if first.status != 202:
        return first
    assert drain(harness) == 1
    return harness.request("GET", "/whoami", headers=headers)


def assert_isolated(
    harness: Harness, a: dict[str, str | None], b: dict[str, str | None], vary: list[str] | None = None
) -> None:
    answer_a = fetch(harness, headers_of(a))
    assert (answer_a.status, answer_a.body) == (200, echo_of(a, vary))
    first_b = harness.request("GET", "/whoami", headers=headers_of(b))
    assert first_b.status == 202, f"user B was served an answer computed for user A: {first_b.body!r}"
    answer_b = fetch(harness, headers_of(b))
    assert answer_b.body == echo_of(b, vary), "user B got an answer that was not computed for them"
    for value in a.values():
        if value and value.encode("latin-1") not in echo_of(b, vary):
            assert value.encode("latin-1") not in answer_b.body
    again_a = harness.request("GET", "/whoami", headers=headers_of(a))
    assert (again_a.status, again_a.body) == (200, echo_of(a, vary))
    head_b = harness.request("HEAD", "/whoami", headers=headers_of(b))
    assert (head_b.status, head_b.body, from_app(head_b)) == (200, b"", True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@CREDENTIALS
@given(pair=st.tuples(USER, USER).filter(lambda pair: pair[0] != pair[1]))
def test_an_answer_for_one_credential_is_never_served_to_another(protocol: str, pair: Any) -> None:
    (auth_a, cookie_a), (auth_b, cookie_b) = pair
    with opened(protocol) as harness:
        assert_isolated(
            harness,
            {"Authorization": auth_a, "Cookie": cookie_a},
            {"Authorization": auth_b, "Cookie": cookie_b},
        )


#: (vary option, the one header the two users differ in, whether that must isolate them)
VARY_CASES = [
    (None, "Authorization", True),
    (None, "Cookie", True),
    (None, "X-Other", False),
    (["X-Tenant"], "X-Tenant", True),
    (["X-Tenant"], "Authorization", False),
    (["X-Tenant"], "Cookie", False),
    (["x-tenant", "AUTHORIZATION"], "Authorization", True),
    ([], "Authorization", False),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("vary", "header", "isolates"), VARY_CASES)
@CREDENTIALS
@given(values=st.tuples(VALUE, VALUE).filter(lambda pair: pair[0] != pair[1]), shared=USER)
def test_the_vary_list_decides_which_headers_separate_answers(
    protocol: str, vary: list[str] | None, header: str, isolates: bool, values: tuple[str, str], shared: Any
) -> None:
    options = {} if vary is None else {"vary": vary}
    base: dict[str, str | None] = {"Authorization": shared[0], "Cookie": shared[1], "X-Tenant": None}
    a = {**base, header: values[0]}
    b = {**base, header: values[1]}
    with opened(protocol, **options) as harness:
        if isolates:
            assert_isolated(harness, a, b, vary)
            return
        answer_a = fetch(harness, headers_of(a))
        assert answer_a.body == echo_of(a, vary)  # a header outside the key never reaches the app
        served_b = harness.request("GET", "/whoami", headers=headers_of(b))
        assert (served_b.status, served_b.body) == (200, echo_of(a, vary)), f"{header} is not in vary={vary}"
