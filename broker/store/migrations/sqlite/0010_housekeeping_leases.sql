-- Leases that make one node of many do a piece of housekeeping that cannot be claimed row by row: the leftover-blob
-- sweep lists the whole blob store, so only the node holding the "leftover_sweep" lease runs it
-- (broker/services/leases.py). A lease is taken by one statement (claim_lease) when it is free or its time has
-- passed, renewed by its holder on every pass and deleted by it on shutdown. A holder that dies without releasing
-- it loses it when held_until passes. Times are integer microseconds since the epoch.
CREATE TABLE housekeeping_leases (
    lease_name      TEXT PRIMARY KEY,
    holder          TEXT NOT NULL,
    held_until      INTEGER NOT NULL
);
