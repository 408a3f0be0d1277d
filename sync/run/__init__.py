"""Everything that happens inside a run: the executor and the phases that ride on it.

engine.py              claim, lock, pre-flight, phases, waits, stops, a truthful end
context.py             the seam a phase may use (what the executor offers it)
planning.py            read the source, stage new and changed people as pending
batch.py               one batch through Moodle: look-ups, decisions, writes, isolation
state.py               commit a batch: records, history, conflicts, dead letters, counters
reconcile.py           the nightly diff of source and Moodle (a phase of a reconcile run)
apply_resolutions.py   applying approved resolutions (a phase of a resolution run)
locks.py, connect.py   the site's run lock; a Moodle client for a site
"""
