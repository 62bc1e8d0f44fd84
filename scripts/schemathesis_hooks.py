"""Schemathesis hooks for scripts/schemathesis.sh.

CPython 3.11 can raise SystemError ("AST constructor recursion depth mismatch")
from ast.parse when Hypothesis parses a large module to describe a lambda for
its own log output. The description is cosmetic, so it falls back to the
placeholder Hypothesis itself uses when it cannot find a lambda's source,
instead of aborting the run.
"""

from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description


def _describe_or_placeholder(f):
    try:
        return _describe(f)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _describe_or_placeholder
