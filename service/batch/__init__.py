"""Distributed batch reporting of an archive on Ray Data (``python -m service.batch``).

``inputs`` lists the files, ``reporting`` turns files into ``POST /v1/report`` records,
``worker`` is the Ray actor holding one engine, ``records`` owns the output folder and
``runner`` wires them together. See docs/SCALING.md, "Batch reporting".
"""
