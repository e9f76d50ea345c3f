"""{{ cookiecutter.description }}"""

from .plugin import CountingSource, UpperCaseProcessor

__all__ = ["CountingSource", "UpperCaseProcessor"]
