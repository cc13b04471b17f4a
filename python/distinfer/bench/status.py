"""Exit statuses of `distinfer bench`: what a finished scenario or capacity search tells its caller."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distinfer.results.capacity import CapacityResult

if TYPE_CHECKING:
    from distinfer.results.summary import Summary

EXIT_STATUSES = """Exit status: 0 the run finished and is valid; 2 refused before any load (bad options, an
unusable results directory, or the probe request found the URL unreachable, the model unknown or
the API key missing or wrong; the message names the fix); 3 no request succeeded (a capacity
search: no rate passed); 4 the saturation guard marked the run INVALID (summary.json says why); 5 a
results write failed mid-run (no summary.json: a resumed sweep runs the scenario again); 6 the
server stopped answering during the run and never came back (its summary says when; a sweep stops
there). A sweep exits with the worst of its scenarios' statuses. `bench placement`: 0 every replica on
the scenario's hosts, 7 one is elsewhere (or none runs), 2 the answers given do not say."""

EXIT_OK, EXIT_ALL_FAILED, EXIT_INVALID, EXIT_RESULTS_LOST, EXIT_SERVER_LOST = 0, 3, 4, 5, 6
EXIT_MISPLACED = 7


def scenario_status(summary: Summary) -> int:
    """0 valid, 3 when no request succeeded, 4 when the guard marked the run invalid, 6 when the server
    stopped answering during the run and never came back (what follows it cannot run)."""
    if summary.availability is not None and summary.availability.endpoint_lost_at_s is not None:
        return EXIT_SERVER_LOST
    if summary.metrics.completed == 0:
        return EXIT_ALL_FAILED
    return EXIT_OK if summary.valid else EXIT_INVALID


def capacity_status(result: CapacityResult) -> int:
    """0 a capacity was found, 3 no rate passed."""
    return EXIT_OK if result.capacity_rate is not None else EXIT_ALL_FAILED
