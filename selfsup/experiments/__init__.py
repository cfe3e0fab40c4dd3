"""The lab notebook, out of the core: experiments that run the library end to end and record what they
find — `selfsup bench` (a leaderboard of methods under one budget) and `selfsup claims` (the field's claims
as pre-registered experiments). The applications layer: nothing below imports it."""
