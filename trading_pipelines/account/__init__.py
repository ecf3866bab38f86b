"""The account, per strategy × window, in time order: the pure step (:mod:`.decide`), the one
execution engine (:mod:`.engine`, :mod:`.sync`), the book's view (:mod:`.view`) and the thin shell
that runs a window or one manual step (:mod:`.window`)."""
