"""Build entry point; metadata lives in pyproject.toml. Compiled ops (csrc/) hook in here."""

from setuptools import setup

setup()
