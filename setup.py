"Shim for tools that still expect a setup.py; all metadata lives in pyproject.toml."
from setuptools import setup

setup()
