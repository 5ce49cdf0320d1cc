"""Sends the benchmark's report cycle to a server, as bldst-bench's load does for one client.

    python3 bench/report_cycle.py PORT TOKEN KIND LAPS [BUILD_ID]

KIND is plain, outputs, leased or policy (see BENCHMARKS.md). Each lap is 61 requests: in_progress,
failed and completed for every stage 0..95, then an operator reset to 0. Without BUILD_ID it
starts a build first. Prints the build id. Used by bench/instructions.sh.
"""
import http.client
import json
import sys


def main() -> None:
    port, token, kind, laps = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    if kind not in ("plain", "outputs", "leased", "policy"):
        sys.exit(f"unknown report kind `{kind}`: expected plain, outputs, leased or policy")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(path: str, body: dict) -> dict:
        connection.request("POST", path, json.dumps(body), headers)
        response = connection.getresponse()
        data = response.read()
        if response.status >= 300:
            sys.exit(f"POST {path}: {response.status} {data[:300]!r}")
        return json.loads(data)

    if len(sys.argv) > 5:
        build = sys.argv[5]
    else:
        start = {"platform": "aws", "image_type": "rhel8"}
        if kind == "policy":
            # The largest policy a build may have: one rule per stage, none reopening, so the
            # cycle is the plain one (as bldst-bench's `policy` kind).
            start["retry_policy"] = {"rules": [
                {"stages": stage, "max_retries": 100, "backoff_base_secs": 0, "backoff_cap_secs": 0}
                for stage in range(0, 101, 5)
            ]}
        build = post("/builds", start)["build"]["id"]
    print(build, flush=True)
    for _ in range(laps):
        for stage in range(0, 100, 5):
            for status in ("in_progress", "failed", "completed"):
                body = {"state": stage, "status": status, "message": "bldst-bench report"}
                if kind == "outputs" and status == "completed":
                    body["outputs"] = {
                        "ami_id": f"ami-0bench0001{stage:03}",
                        "instance_ip": "10.0.3.17",
                        "snapshot_id": f"snap-0bench{stage:03}",
                    }
                if kind == "leased":
                    body["run"] = "bldst-bench/client-1"
                post(f"/builds/{build}/transitions", body)
        post(f"/builds/{build}/reset", {"state": 0, "reason": "bldst-bench: next lap"})


if __name__ == "__main__":
    main()
