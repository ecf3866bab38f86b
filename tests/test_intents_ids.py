"""Tests for the intent state machine (domain.intents) and deterministic ids (domain.ids)."""

from __future__ import annotations

import hashlib
import itertools
import re
from datetime import datetime, timedelta, timezone

import pytest

from trading_pipelines.domain.ids import client_order_id, intent_id
from trading_pipelines.domain.intents import ALLOWED, InvalidTransition, is_terminal, transition
from trading_pipelines.domain.models import IntentStatus as S
from trading_pipelines.domain.models import OrderRole

UTC = timezone.utc
WINDOW_END = datetime(2024, 3, 1, 4, tzinfo=UTC)

# The lifecycle, written out independently of intents.ALLOWED (module docstring + VALIDATED → FAILED).
EXPECTED = {
    S.PENDING: {S.VALIDATED, S.REJECTED, S.NO_TRADE},
    S.VALIDATED: {S.SUBMITTED, S.AWAITING_CONFIRMATION, S.DRY_RUN, S.CANCELLED, S.FAILED},
    S.AWAITING_CONFIRMATION: {S.SUBMITTED, S.CANCELLED, S.DRY_RUN},
    S.SUBMITTED: {S.MONITORING, S.UNPROTECTED, S.CLOSED, S.SENT, S.CANCELLED, S.FAILED},
    S.MONITORING: {S.CLOSED, S.UNPROTECTED},
    S.UNPROTECTED: {S.MONITORING, S.CLOSED},  # no stop could rest (protection: flag) until one does, or it closes
}
TERMINAL = {S.REJECTED, S.NO_TRADE, S.DRY_RUN, S.CLOSED, S.SENT, S.CANCELLED, S.FAILED}


# --------------------------------------------------------------------------- state machine


def test_every_status_has_an_entry():
    assert set(ALLOWED) == set(S)


@pytest.mark.parametrize(
    "path",
    [
        [S.PENDING, S.VALIDATED, S.SUBMITTED, S.MONITORING, S.CLOSED],
        [S.PENDING, S.VALIDATED, S.SUBMITTED, S.CLOSED],
        [S.PENDING, S.VALIDATED, S.SUBMITTED, S.SENT],
        [S.PENDING, S.VALIDATED, S.SUBMITTED, S.CANCELLED],
        [S.PENDING, S.VALIDATED, S.SUBMITTED, S.FAILED],
        [S.PENDING, S.VALIDATED, S.AWAITING_CONFIRMATION, S.SUBMITTED, S.MONITORING, S.CLOSED],
        [S.PENDING, S.VALIDATED, S.AWAITING_CONFIRMATION, S.DRY_RUN],
        [S.PENDING, S.VALIDATED, S.AWAITING_CONFIRMATION, S.CANCELLED],
        [S.PENDING, S.VALIDATED, S.DRY_RUN],
        [S.PENDING, S.VALIDATED, S.CANCELLED],
        [S.PENDING, S.VALIDATED, S.FAILED],
        [S.PENDING, S.REJECTED],
        [S.PENDING, S.NO_TRADE],
    ],
)
def test_allowed_paths(path):
    cur = path[0]
    for nxt in path[1:]:
        cur = transition(cur, nxt)
        assert cur is nxt
    assert is_terminal(cur)


@pytest.mark.parametrize(("cur", "new"), [(a, b) for a, b in itertools.permutations(S, 2)])
def test_transition_table_exhaustive(cur, new):
    if new in EXPECTED.get(cur, set()):
        assert transition(cur, new) is new
    else:
        with pytest.raises(InvalidTransition, match=f"from {cur.value} to {new.value}"):
            transition(cur, new)


@pytest.mark.parametrize(
    ("cur", "new"),
    [
        (S.PENDING, S.SUBMITTED),  # skipping validation
        (S.PENDING, S.MONITORING),
        (S.VALIDATED, S.REJECTED),  # guards already passed
        (S.NO_TRADE, S.VALIDATED),  # a no-trade never becomes an order
        (S.REJECTED, S.VALIDATED),
        (S.DRY_RUN, S.SUBMITTED),
        (S.MONITORING, S.CANCELLED),  # an open position is exited, never "cancelled"
        (S.CLOSED, S.MONITORING),
        (S.SENT, S.MONITORING),  # a webhook reports nothing back
        (S.AWAITING_CONFIRMATION, S.MONITORING),
    ],
)
def test_invalid_transitions_raise(cur, new):
    with pytest.raises(InvalidTransition):
        transition(cur, new)


def test_invalid_transition_is_a_value_error():
    assert issubclass(InvalidTransition, ValueError)


@pytest.mark.parametrize("status", list(S))
def test_same_status_is_a_noop(status):
    # idempotent re-runs, including terminal statuses
    assert transition(status, status) is status


@pytest.mark.parametrize("status", list(S))
def test_terminal_statuses(status):
    assert is_terminal(status) == (status in TERMINAL)


# --------------------------------------------------------------------------- intent_id


def test_intent_id_worked():
    # "it-" + first 24 hex of sha256("spot_4h_majors|BTC/USDT|2024-03-01T04:00:00+00:00")
    raw = b"spot_4h_majors|BTC/USDT|2024-03-01T04:00:00+00:00"
    expected = "it-" + hashlib.sha256(raw).hexdigest()[:24]
    assert intent_id("spot_4h_majors", "BTC/USDT", WINDOW_END) == expected
    assert re.fullmatch(r"it-[0-9a-f]{24}", expected) and len(expected) == 27


def test_intent_id_deterministic():
    assert intent_id("s", "BTC/USDT", WINDOW_END) == intent_id("s", "BTC/USDT", datetime(2024, 3, 1, 4, tzinfo=UTC))


@pytest.mark.parametrize(
    "other",
    [
        ("t", "BTC/USDT", WINDOW_END),
        ("s", "ETH/USDT", WINDOW_END),
        ("s", "BTC/USDT", WINDOW_END + timedelta(seconds=1)),
        ("s", "BTC/USDT", WINDOW_END + timedelta(hours=4)),
        ("S", "BTC/USDT", WINDOW_END),  # case-sensitive
    ],
)
def test_intent_id_sensitive_to_each_input(other):
    assert intent_id(*other) != intent_id("s", "BTC/USDT", WINDOW_END)


def test_intent_id_normalises_timezones_to_utc():
    # 2024-03-01 06:00 at UTC+2 is the same instant as 04:00Z → the same intent
    plus2 = datetime(2024, 3, 1, 6, tzinfo=timezone(timedelta(hours=2)))
    assert intent_id("s", "BTC/USDT", plus2) == intent_id("s", "BTC/USDT", WINDOW_END)


def test_intent_id_rejects_naive_datetime():
    with pytest.raises(ValueError, match="naive"):
        intent_id("s", "BTC/USDT", datetime(2024, 3, 1, 4))


# --------------------------------------------------------------------------- client_order_id

BINANCE_SAFE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
ROLE_CODES = {OrderRole.ENTRY: "en", OrderRole.STOP_LOSS: "sl", OrderRole.TAKE_PROFIT: "tp", OrderRole.EXIT: "ex",
              OrderRole.LIQUIDATION: "lq"}


@pytest.mark.parametrize("role", list(OrderRole))
def test_client_order_id_format(role):
    it = intent_id("spot_4h_majors", "BTC/USDT", WINDOW_END)
    coid = client_order_id(it, role)
    # "tp-" + 24 hex + "-" + 2-letter role = 3 + 24 + 1 + 2 = 30 characters
    assert coid == f"tp-{it[3:]}-{ROLE_CODES[role]}"
    assert len(coid) == 30 <= 36
    assert BINANCE_SAFE.fullmatch(coid)


def test_client_order_ids_distinct_per_role_and_intent():
    a = intent_id("s", "BTC/USDT", WINDOW_END)
    b = intent_id("s", "BTC/USDT", WINDOW_END + timedelta(hours=4))
    ids = {client_order_id(i, r) for i in (a, b) for r in OrderRole}
    assert len(ids) == 2 * len(OrderRole) == 10  # 2 intents × 5 roles


def test_client_order_id_deterministic():
    it = intent_id("s", "BTC/USDT", WINDOW_END)
    assert client_order_id(it, OrderRole.STOP_LOSS) == client_order_id(it, OrderRole.STOP_LOSS)


@pytest.mark.parametrize("bad", ["foo", "", "it-abc", "xx-" + "0" * 24, "it-" + "0" * 25])
def test_client_order_id_rejects_non_intent_ids(bad):
    with pytest.raises(ValueError, match="not an intent id"):
        client_order_id(bad, OrderRole.ENTRY)
