"""A token budget is never overshot by the call that crosses it (issue 13: 8,000 allowed, 9,480
spent). A call is admitted only if the tokens used so far plus its prompt estimate plus
``max_tokens`` fit the limit.

Real ``openai`` SDK against ``tests/openai_stub_server.py``. Worked numbers: every answer reports
``prompt_tokens=1296, completion_tokens=600`` (1,896 tokens a call) with ``max_tokens: 600`` and
``max_tokens_per_run: 8000``. Before calls 1–4, 0, 1,896, 3,792 and 5,688 tokens are used and
each call needs about 1,296 + 600 = 1,896 more (≤ 8,000); before call 5, 7,584 are used and
7,584 + 1,896 = 9,480 > 8,000: no call. The old rule (a limit counts once reached) made call 5
and spent 9,480.

The prompt estimate: characters ÷ 4 until the server has reported ``prompt_tokens`` for a call of
the analysis, then the largest reported tokens-per-character ratio times the prompt's characters
(never below characters ÷ 4).
"""

from __future__ import annotations

import math
import re

from test_llm_budget_concurrency import ENDS, INST, _answer, _signals, llm  # noqa: F401 - the fixture

from trading_pipelines.analysis import analyze as analysis
from trading_pipelines.analysis.budget import CHARS_PER_TOKEN, prompt_token_estimate
from trading_pipelines.ledger import repo
from trading_pipelines.ledger.db import session_scope

USAGE = {"prompt_tokens": 1296, "completion_tokens": 600}


def test_the_call_that_would_cross_the_run_budget_is_not_made(llm):  # noqa: F811
    stub, _, ledger, runtime = llm
    engine = ledger()
    for i in range(6):
        stub.push_json_answer(_answer(i), **USAGE)
    out = analysis.analyze(runtime(max_tokens=600, budget={"max_tokens_per_run": 8000}), INST, ENDS, "run-1")
    assert [a.http_calls for a in out] == [1, 1, 1, 1, 0, 0]
    with session_scope(engine) as s:
        assert repo.provider_usage(s, "spot_4h_llm", run_id="run-1")[0] == 4 * 1896 == 7584  # ≤ 8,000
    reason = out[4].signal.no_trade_reason
    assert reason.startswith("budget: max_tokens_per_run 8000 leaves no room for this call (7584 tokens used by run run-1"), reason
    est = int(re.search(r"prompt ~(\d+) tokens", reason).group(1))
    assert abs(est - 1296) <= 40  # the calibrated estimate of a prompt of about the same length
    assert f"+ max_tokens 600 = {7584 + est + 600} > 8000" in reason
    assert _signals(engine)[ENDS[4]].no_trade_reason == reason  # a recorded no-trade


def test_prompt_token_estimate_worked_numbers():
    assert CHARS_PER_TOKEN == 4
    assert prompt_token_estimate(4001, None) == 1001  # ceil(4001 / 4)
    assert prompt_token_estimate(4000, 0.1) == 1000  # a server that counts fewer tokens never lowers it
    assert prompt_token_estimate(4000, 1296 / 4100) == math.ceil(4000 * 1296 / 4100) == 1265
