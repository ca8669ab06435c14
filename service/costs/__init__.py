"""Measured cost curves of the mechanisms: the sweep (``sweep``), the fits (``fit``), the stated
complexities read as growth exponents (``bigo``), the profile files under data/costs/ (``profile``)
and the charts drawn from them (``svg``).

Nothing here runs in the HTTP request path: the sweep is a command (``attention-atlas bench costs``)
whose output is data, loaded by ``db sync`` like the rest of the knowledge.
"""
