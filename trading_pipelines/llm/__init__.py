"""The LLM analysts and the signal providers they run on.

* :mod:`.agents` — one analyst per mode; :mod:`.context` — the account context their prompts carry;
* :mod:`.requests` — what a provider is given and returns; :mod:`.schemas` — the answer's schema
  per mode; :mod:`.parsing` — parsing answers, market checks on the model's numbers, scrubbing;
  :mod:`.prompts` — template rendering and versions;
* :mod:`.calls` — the provider interface, cache key and cost of a call; :mod:`.rules_provider`,
  :mod:`.openai_provider` (with its server :mod:`.dialects` and :mod:`.capacity`); :mod:`.providers` — building one
  from a strategy's config.
"""
