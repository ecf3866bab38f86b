"""Crash-injection harness: after a SIGKILL at any point of an order route and a re-run of the same
route, no order was sent twice, every venue order is in the ledger, the intent is there, and every
open position has a resting reduce-only stop for its full quantity.

Setup: the Binance stand-in (tests/binance_standin.py: spot + USDⓈ-M, a separate process that
records every POST and keeps its state on disk) is started once for the module. Each kill point
gets a fresh API key (= a fresh account on the stand-in) and a fresh DAGSTER_HOME + SQLite ledger,
and runs tests/crash_driver.py (the real CLI, ``main(argv)``) in a subprocess twice:

1. with a kill: either ``--kill-at-statement N`` (the driver SIGKILLs itself just before the N-th
   ledger statement) or a server-side hold: the stand-in accepts the k-th order POST, records it,
   writes ``accepted-<k>`` and holds the answer; the harness SIGKILLs the driver when the marker
   appears (the order is at the venue, the client never heard back);
2. the re-run: the same command, no kill.

The monitor is not run: the CLI has no command for it (the position monitor is a Dagster sensor
only). Then, from the stand-in's ``posts.jsonl`` and state and the ledger (sqlalchemy on the SQLite
file), per kill point:

(a) duplicate POSTs: a client order id accepted twice, or more than one entry order accepted;
(b) venue orders missing from the ledger's ``orders`` table;
(c) lost intent: no entry intent of the strategy in the ledger, or a ledger order whose intent row
    is gone;
(d) unprotected positions: an open position (spot: base balance above the lot and notional
    minimums; futures: ``positionAmt`` ≠ 0) without resting reduce-only stop(s) covering its whole
    quantity (spot: an open ``STOP_LOSS``/``STOP_LOSS_LIMIT`` sell — an OCO leg — for the quantity
    rounded down to the lot; futures: open algo ``STOP_MARKET`` on the closing side).

Routes and markets (user strategies written to a temp ``TRADING_STRATEGIES_PATH``: the shipped
files with ``venue: {kind: ccxt, …}``, one instrument, live): ``spot-pipeline`` (crash_spot on
``binance``, ``review --start 2026-03-03T00:00Z``: the rules signal there is a buy with confidence
0.458, so ``min_confidence`` is 0.4), ``futures-pipeline`` (crash_futures on ``binanceusdm``,
window 2026-04-14T05:00Z: a long at 0.95), ``spot-manual`` and ``futures-manual`` (``intent create``
+ ``intent execute --mode LIVE --acknowledge-risk`` for the same windows). The stand-in's price is
the window's close (spot 68172.8, futures 74210.11), so the limit IOC entries fill.

Sets: by default a sample of 8 kill points (``test_crash_sample``); the full set (every
``CRASH_STRIDE``-th ledger statement of each route — default 10; 1 for every statement — plus every accepted order POST,
>= 100 kill points in all) behind ``@pytest.mark.crash_full`` (``-m crash_full`` or ``CRASH_FULL=1``).
``CRASH_JOBS`` (default 2) kill points run at once. A failing kill point keeps its home (driver
logs, ledger) and names it in the failure; ``CRASH_KEEP=1`` keeps every one. The results table is printed at the end and
written to ``var/crash_harness.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
import yaml
from binance_standin import StandIn, account_id
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).resolve().parent / "crash_driver.py"
SHIPPED = REPO / "trading_pipelines" / "defs" / "strategies"
RESULTS_JSON = REPO / "var" / "crash_harness.json"
JOBS = int(os.environ.get("CRASH_JOBS", "2"))
STRIDE = int(os.environ.get("CRASH_STRIDE", "10"))
HOLD_SECONDS = 60.0
RUN_TIMEOUT = 300.0


@dataclass(frozen=True)
class Scenario:
    name: str
    route: str
    strategy: str
    shipped: str
    exchange: str
    instrument: str
    symbol: str
    window: str  # the window's start, as `review --start` takes it
    now: str  # the pinned wall clock: in the bar after the window
    price: float  # the window's close (data/ohlcv)
    side: str
    order_posts: int  # accepted order POSTs of a clean run (entry + legs)

    @property
    def futures(self) -> bool:
        return self.exchange == "binanceusdm"


SCENARIOS = {s.name: s for s in (
    Scenario("spot-pipeline", "pipeline", "crash_spot", "spot_4h_majors", "binance", "BTC/USDT", "BTCUSDT",
             "2026-03-03T00:00Z", "2026-03-03T04:10Z", 68172.8, "buy", 2),
    Scenario("futures-pipeline", "pipeline", "crash_futures", "futures_1h_btc_eth", "binanceusdm", "BTC/USDT:USDT",
             "BTCUSDT", "2026-04-14T05:00Z", "2026-04-14T06:10Z", 74210.11, "long", 3),
    Scenario("spot-manual", "manual", "crash_spot", "spot_4h_majors", "binance", "BTC/USDT", "BTCUSDT",
             "2026-03-03T00:00Z", "2026-03-03T04:10Z", 68172.8, "buy", 2),
    Scenario("futures-manual", "manual", "crash_futures", "futures_1h_btc_eth", "binanceusdm", "BTC/USDT:USDT",
             "BTCUSDT", "2026-04-14T05:00Z", "2026-04-14T06:10Z", 74210.11, "long", 3),
)}

# the default sample: (scenario, kill kind, n) — statement kills at fractions of the route's count
SAMPLE = [("spot-pipeline", "stmt", 0.5), ("spot-pipeline", "stmt", 0.95), ("spot-pipeline", "post", 1),
          ("spot-pipeline", "post", 2), ("futures-pipeline", "stmt", 0.95), ("futures-pipeline", "post", 2),
          ("spot-manual", "stmt", 0.9), ("spot-manual", "post", 1)]


@dataclass
class Result:
    scenario: str
    kill: str
    killed: bool = False
    kill_rc: int | None = None
    rerun_rc: int | None = None
    duplicate_posts: list[str] = field(default_factory=list)
    missing_orders: list[str] = field(default_factory=list)
    lost_intents: list[str] = field(default_factory=list)
    unprotected: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.scenario} kill {self.kill}"

    def problems(self) -> list[str]:
        out = []
        if not self.killed:
            out.append(f"the kill point was not reached (kill run exit {self.kill_rc})")
        for what, items in (("duplicate POSTs", self.duplicate_posts), ("venue orders missing from the ledger",
                            self.missing_orders), ("lost intents", self.lost_intents),
                            ("open positions without a resting stop", self.unprotected)):
            if items:
                out.append(f"{len(items)} {what}: {'; '.join(items)}")
        return out


RESULTS: list[Result] = []


# ---------------------------------------------------------------------------------------------- fixtures
def _full_enabled(config) -> bool:
    return os.environ.get("CRASH_FULL", "").strip() not in ("", "0") or "crash_full" in (config.option.markexpr or "")


@pytest.fixture(scope="module")
def standin():
    s = StandIn()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def strategy_dir():
    d = Path(tempfile.mkdtemp(prefix="crash-strategies-"))
    for sc in SCENARIOS.values():
        doc = yaml.safe_load((SHIPPED / sc.shipped / "defs.yaml").read_text())
        a = doc["attributes"]
        a["name"], a["instruments"] = sc.strategy, [sc.instrument]
        a["venue"] = {k: a["venue"][k] for k in ("starting_cash", "fee_rate", "slippage_bps")} | {
            "kind": "ccxt", "exchange": sc.exchange, "api_key_env": "BINANCE_API_KEY", "secret_env": "BINANCE_SECRET"}
        a["risk"]["min_confidence"] = 0.4
        a["execution"] = {"dry_run": False, "confirm": "auto", "live_ack": sc.strategy}
        (d / sc.strategy).mkdir(exist_ok=True)
        (d / sc.strategy / "defs.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return d


@pytest.fixture(scope="module")
def report(request):
    yield RESULTS
    if not RESULTS:
        return
    rows = summarize(RESULTS)
    lines = format_table(rows)
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps({"rows": rows, "kill_points": [asdict(r) for r in RESULTS]}, indent=2))
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    for line in ["", "crash harness results (" + str(RESULTS_JSON.relative_to(REPO)) + "):", *lines]:
        (tr.write_line(line) if tr else print(line))


# ---------------------------------------------------------------------------------------------- running
class KillPoint:
    """One kill point: fresh account and home, the killed run, the re-run, the checks."""

    def __init__(self, standin: StandIn, strategy_dir: Path, sc: Scenario, kind: str, n: int | None):
        self.standin, self.sc, self.kind, self.n = standin, sc, kind, n
        tag = f"{sc.name}-{kind}{n if n is not None else ''}-{uuid.uuid4().hex[:8]}"
        self.key, self.secret = f"crash-key-{tag}", f"crash-secret-{uuid.uuid4().hex}"
        self.acct = account_id(self.key)
        self.home = Path(tempfile.mkdtemp(prefix=f"crash-{tag}-"))
        self.strategy_dir = strategy_dir
        self.env = {**os.environ, "BINANCE_API_KEY": self.key, "BINANCE_SECRET": self.secret,
                    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                    "DAGSTER_HOME": str(self.home), "TRADING_LEDGER_URL": f"sqlite:///{self.home / 'ledger.sqlite'}",
                    "TRADING_CHART_DIR": str(self.home / "charts")}
        self.env.pop("TRADING_VENUE_URL", None)

    def cmd(self, *extra: str) -> list[str]:
        sc = self.sc
        return [sys.executable, str(DRIVER), "--route", sc.route, "--strategy-dir", str(self.strategy_dir),
                "--home", str(self.home), "--standin", self.standin.url, "--strategy", sc.strategy,
                "--instrument", sc.instrument, "--side", sc.side, "--window", sc.window, "--now", sc.now, *extra]

    def _run(self, extra: list[str], kill_on_marker: Path | None = None) -> int:
        log = open(self.home / f"driver-{len(list(self.home.glob('driver-*.log')))}.log", "wb")
        p = subprocess.Popen(self.cmd(*extra), env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        deadline = time.monotonic() + RUN_TIMEOUT
        try:
            while p.poll() is None:
                if kill_on_marker is not None and kill_on_marker.exists():
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(10)
                    return -signal.SIGKILL
                if time.monotonic() > deadline:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(10)
                    raise TimeoutError(f"driver ran over {RUN_TIMEOUT}s: {self.home}")
                time.sleep(0.02)
            return p.returncode
        finally:
            log.close()

    def calibrate(self) -> int:
        """A clean run: the number of ledger statements of the route."""
        self.standin.control("price", symbol=self.sc.symbol, price=self.sc.price)
        rc = self._run(["--count-file", str(self.home / "count")])
        assert rc == 0, f"{self.sc.name}: the clean calibration run failed (exit {rc}); logs in {self.home}"
        return int((self.home / "count").read_text())

    def run(self) -> Result:
        t0 = time.monotonic()
        label = f"stmt#{self.n}" if self.kind == "stmt" else (f"post#{self.n}" if self.kind == "post" else "none")
        res = Result(self.sc.name, label)
        self.standin.control("price", symbol=self.sc.symbol, price=self.sc.price)
        if self.kind == "stmt":
            res.kill_rc = self._run(["--kill-at-statement", str(self.n)])
        elif self.kind == "post":
            self.standin.control("hold", account=self.acct, nth=self.n, seconds=HOLD_SECONDS)
            res.kill_rc = self._run([], kill_on_marker=self.standin.acct_dir(self.acct) / f"accepted-{self.n}")
        else:
            res.kill_rc = -signal.SIGKILL
        res.killed = res.kill_rc == -signal.SIGKILL
        res.rerun_rc = self._run([])
        self.check(res)
        res.seconds = round(time.monotonic() - t0, 2)
        if res.problems() or os.environ.get("CRASH_KEEP"):
            res.note = str(self.home)  # kept for inspection: driver logs, ledger
        else:
            shutil.rmtree(self.home, ignore_errors=True)
        return res

    # ------------------------------------------------------------------ checks
    def check(self, res: Result) -> None:
        sc = self.sc
        posts = self.standin.posts(self.acct)
        state = self.standin.state(self.acct)
        eng = create_engine(f"sqlite:///{self.home / 'ledger.sqlite'}")
        try:
            with eng.connect() as c:
                ledger_orders = {r[0]: r[1] for r in c.execute(text("SELECT client_order_id, intent_id FROM orders"))}
                intents = {r[0]: r for r in c.execute(text(
                    "SELECT intent_id, kind, status, window_end FROM intents WHERE strategy = :s AND book = 'live'"),
                    {"s": sc.strategy})}
        except Exception as e:  # noqa: BLE001 - no ledger at all is a finding, not a harness crash
            ledger_orders, intents = {}, {}
            res.lost_intents.append(f"ledger unreadable: {type(e).__name__}: {e}"[:200])
        eng.dispose()

        # (a) duplicate POSTs
        accepted: dict[str, int] = {}
        entries: set[str] = set()
        for p in posts:
            if p["method"] != "POST" or p["status"] != 200:
                continue
            prm = p["params"]
            if p["path"] in ("/api/v3/order", "/fapi/v1/order"):
                ids = [prm.get("newClientOrderId")]
                if str(prm.get("reduceOnly")).lower() != "true" and prm.get("side") == "BUY":
                    entries.add(prm.get("newClientOrderId"))
            elif p["path"] == "/fapi/v1/algoOrder":
                ids = [prm.get("clientAlgoId")]
            elif p["path"] == "/api/v3/orderList/oco":
                ids = [prm.get("aboveClientOrderId"), prm.get("belowClientOrderId")]
            else:
                continue
            for i in ids:
                accepted[i] = accepted.get(i, 0) + 1
        res.duplicate_posts += [f"{cid} accepted {n}x" for cid, n in accepted.items() if n > 1]
        if len(entries) > 1:
            res.duplicate_posts.append(f"{len(entries)} different entry orders accepted: {sorted(entries)}")

        # (b) venue orders missing from the ledger
        book = state["fut"] if sc.futures else state["spot"]
        venue_orders = [(o["clientOrderId"], o["type"], o["status"]) for o in book["orders"]]
        if sc.futures:
            venue_orders += [(o["clientAlgoId"], o["orderType"], o["algoStatus"]) for o in book["algo"]]
        for cid, typ, st in venue_orders:
            if cid.endswith("-trg"):  # placed by the venue itself when an algo order triggered
                continue
            if cid not in ledger_orders:
                res.missing_orders.append(f"{cid} ({typ} {st})")

        # (c) lost intents
        if not any(r[1] == "entry" for r in intents.values()) and not res.lost_intents:
            res.lost_intents.append(f"no entry intent of {sc.strategy} in the ledger")
        orphans = sorted({i for i in ledger_orders.values() if i not in intents})
        res.lost_intents += [f"ledger orders point at missing intent {i}" for i in orphans]

        # (d) open positions without a resting stop for the full quantity
        if sc.futures:
            for sym, pos in book["positions"].items():
                amt = float(pos["amt"])
                if abs(amt) < 1e-12:
                    continue
                close_side = "SELL" if amt > 0 else "BUY"
                stops = [o for o in book["algo"] if o["symbol"] == sym and o["algoStatus"] == "NEW" and o["side"] == close_side
                         and o["orderType"] in ("STOP_MARKET", "STOP") and (o["reduceOnly"] or o["closePosition"])]
                covered = math.inf if any(o["closePosition"] for o in stops) else sum(float(o["quantity"]) for o in stops)
                if covered + 1e-9 < abs(amt):
                    res.unprotected.append(f"{sym} positionAmt {amt:g}: resting reduce-only stop qty {covered:g}")
        else:
            base = "BTC"
            free, locked = book["balances"].get(base, [0.0, 0.0])
            total = float(free) + float(locked)
            lot, min_notional = 0.00001, 5.0
            floor_qty = math.floor(total / lot + 1e-6) * lot
            if floor_qty >= lot and floor_qty * sc.price >= min_notional:
                stops = [o for o in book["orders"] if o["symbol"] == sc.symbol and o["side"] == "SELL"
                         and o["status"] in ("NEW", "PARTIALLY_FILLED") and o["type"] in ("STOP_LOSS", "STOP_LOSS_LIMIT")]
                covered = sum(float(o["origQty"]) - float(o["executedQty"]) for o in stops)
                if covered + 1e-9 < floor_qty:
                    res.unprotected.append(f"{sc.symbol} holding {total:.8f} {base}: resting stop qty {covered:g}")


def run_points(standin, strategy_dir, points: list[tuple[Scenario, str, int | None]]) -> list[Result]:
    with ThreadPoolExecutor(max_workers=max(1, JOBS)) as pool:
        return list(pool.map(lambda p: KillPoint(standin, strategy_dir, *p).run(), points))


_COUNTS: dict[str, int] = {}


def statement_count(standin, strategy_dir, sc: Scenario) -> int:
    if sc.name not in _COUNTS:
        _COUNTS[sc.name] = KillPoint(standin, strategy_dir, sc, "none", None).calibrate()
    return _COUNTS[sc.name]


def assert_clean(results: list[Result]) -> None:
    RESULTS.extend(results)
    bad = [f"{r.label} [{r.note}]: " + " | ".join(r.problems()) for r in results if r.problems()]
    assert not bad, f"{len(bad)} of {len(results)} kill points broke the invariants:\n" + "\n".join(bad)


# ---------------------------------------------------------------------------------------------- summary
def summarize(results: list[Result]) -> list[dict]:
    rows = []
    for name in [*SCENARIOS, "all"]:
        rs = [r for r in results if name in ("all", r.scenario)]
        if not rs:
            continue
        rows.append({"scenario": name, "kill_points": len(rs), "kills": sum(r.killed for r in rs),
                     "duplicate_posts": sum(len(r.duplicate_posts) for r in rs),
                     "missing_orders": sum(len(r.missing_orders) for r in rs),
                     "lost_intents": sum(len(r.lost_intents) for r in rs),
                     "unprotected_positions": sum(len(r.unprotected) for r in rs),
                     "failing_points": sum(bool(r.problems()) for r in rs),
                     "seconds_per_point": round(sum(r.seconds for r in rs) / len(rs), 1)})
    return rows


def format_table(rows: list[dict]) -> list[str]:
    cols = ["scenario", "kill_points", "kills", "duplicate_posts", "missing_orders", "lost_intents",
            "unprotected_positions", "failing_points", "seconds_per_point"]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    fmt_row = lambda vals: "  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(vals, widths)))  # noqa: E731
    return [fmt_row(cols), fmt_row("-" * w for w in widths), *(fmt_row([r[c] for c in cols]) for r in rows)]


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", ["spot-pipeline", "futures-pipeline", "spot-manual"])
def test_crash_sample(standin, strategy_dir, report, name):
    """The default sample (8 kill points in all over three routes)."""
    sc = SCENARIOS[name]
    points = []
    for scen, kind, n in SAMPLE:
        if scen != name:
            continue
        if kind == "stmt":
            n = max(1, int(statement_count(standin, strategy_dir, sc) * n))
        points.append((sc, kind, n))
    assert_clean(run_points(standin, strategy_dir, points))


def full_points(standin, strategy_dir, sc: Scenario) -> list[tuple[Scenario, str, int]]:
    total = statement_count(standin, strategy_dir, sc)
    return [(sc, "stmt", n) for n in range(1, total + 1, STRIDE)] + [(sc, "post", k) for k in range(1, sc.order_posts + 1)]


@pytest.mark.crash_full
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_crash_full(standin, strategy_dir, report, request, name):
    """Every CRASH_STRIDE-th ledger statement of the route and every accepted order POST."""
    if not _full_enabled(request.config):
        pytest.skip("the full crash set runs with -m crash_full or CRASH_FULL=1")
    assert_clean(run_points(standin, strategy_dir, full_points(standin, strategy_dir, SCENARIOS[name])))
