"""The results: what a run asks for, what it measured, and every file it leaves, as one typed schema
shared by the writers (bench), the readers (report, capacity_plan) and the plan.

    results/<run-id>/
      run.json                   Provenance       results/run.py (collected by bench/provenance.py), once
      certificate.json           Certificate      results/certificate.py: the load generator's self-test
      scenarios/<name>/
        scenario.json            ScenarioSpec     results/scenario.py, the scenario schema
        placement.json           Placement        results/placement.py: where its replicas ran, from Ray's
                                                  state before the load (`distinfer bench placement`)
        records.jsonl            RequestRecord    results/records.py: one line per request (bench workers),
                                                  each with the server's ServerTiming when it sent one
        status.jsonl             StatusLine       results/availability.py: the server's /status, each second
                                                  (bench/watcher.py)
        replicas.jsonl           ReplicaSample    results/autoscaling.py: an autoscaling scenario's replicas,
                                                  each second from Serve's REST API (bench/replicas.py)
        summary.json             Summary          results/summary.py (bench/runner.py), written last
        nodes/<host>.jsonl       NodeStart, NodeNote, NodeSample lines: results/nodes.py (nodemetrics)
        nodes/<host>.error.json  NodeError        the node_metrics role, for a host with no samples
      capacity/<name>/
        capacity.json            CapacityResult   results/capacity.py (bench/capacity.py's search)
        steps/<NN>-<rate>rps/    a scenario folder per step

Every model stands on one strict base (results/base.py: unknown keys are refused) and every whole
file on `ResultsFile`: its file name (`DEFAULT_FILE`), the schema versions it reads and its one
reader and writer (`load_file`, `save_file`). `results/load.py` reads a whole run directory.

Beside the files, the maths they are computed with: the metrics (`metrics`), the SLO and its verdict
(`slo`), the TTFT split into legs (`legs`), the saturation guard (`guard`) and a fault's course
(`availability`), all pure functions of the records.

This package stands on the standard library, pydantic, numpy, yaml and distinfer.config/errors only:
it imports neither bench (the load driver) nor report (see docs/architecture.md). Its modules import
each other directly; this file imports nothing, so reading one results file loads no more than it.
"""
