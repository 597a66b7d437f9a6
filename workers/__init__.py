"""The member side, and the lowest layer: what one member needs to train, with or without Ray.

`workers/` imports nothing from `ensemble/` or `classifier/`; the small types both sides share
live here (`errors.InputError`, `history.EpochRecord`, `stopping.Decision` and the stop rules,
`events`, `layout`: every file name of a run directory and the one atomic write).
"""
