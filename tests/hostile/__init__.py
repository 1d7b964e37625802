"""The hostile-client suite: attacks on a real server process while a room keeps talking.

Run it with ``python -m pytest -m hostile tests/hostile``; ``python -m tests.hostile.report``
runs it and writes its table into docs/security.md.
"""
