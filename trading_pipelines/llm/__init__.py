"""The LLM analysts: one agent per mode (:mod:`.agents`) and the account context their prompts carry (:mod:`.context`)."""
