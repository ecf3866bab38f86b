"""Analysis, per instrument × window and order-free: bars and freshness (:mod:`.frames`), charts
(:mod:`.charting`), signal calls with the response cache, budgets and concurrency (:mod:`.calls`,
:mod:`.budget`), and the step that runs them (:mod:`.analyze`)."""
