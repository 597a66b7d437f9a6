"""The test suite: fast unit tests without Ray, end-to-end runs marked `slow`; helpers shared through
conftest.py and helper modules (tiny.py, boards.py, ...), never through another test file."""
