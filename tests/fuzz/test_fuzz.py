"""Schemathesis against the running service (tests/fuzz/run.py): every operation, positive and negative
data, every check, a fixed seed, bounded so it takes a few minutes on two cores. Any 5xx, any response
that breaks the OpenAPI document, any schema-valid request refused or schema-violating request accepted
fails it. A longer run: ``python -m tests.fuzz.run --max-examples 1000`` (see README.md)."""

from __future__ import annotations

from tests.fuzz.run import CI_MAX_EXAMPLES, fuzz

# the run API: POST /run, POST /techniques/{slug}/run[/shm], /shm/regions, GET .../implementation
# and the Open Inference Protocol's infer, whose bodies depend on the model the same way
RUN_OPERATIONS = "(/run|/run/shm|/implementation|/infer)$|^/shm/"


def _check(outcome) -> None:
    assert outcome.cases and outcome.cases > 100, outcome.report[-3000:]
    assert not outcome.server_errors, outcome.server_errors[:10]
    assert outcome.returncode == 0, outcome.report[-12000:]


def test_fuzz_every_operation_but_runs():
    _check(fuzz(CI_MAX_EXAMPLES, extra=["--exclude-path-regex", RUN_OPERATIONS]))


def test_fuzz_run_operations():
    """Every check but one: whether a run body is acceptable depends on the technique's own inputs
    (names, ranks, shared sizes, constraints between hyper-parameters), which GET .../implementation
    publishes per technique and no single schema can state; so schema-valid bodies may get a 4xx that
    names what to change. Server errors, response conformance and the refusal of schema-invalid
    requests are all checked."""
    _check(fuzz(CI_MAX_EXAMPLES, extra=["--include-path-regex", RUN_OPERATIONS,
                                        "--exclude-checks", "positive_data_acceptance"]))
