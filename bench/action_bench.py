"""Times the GitHub Action's steps as whole processes, the way a runner starts them: the
binary as `bldst-action`, an environment of INPUT_* and GITHUB_* variables only, a fresh
GITHUB_OUTPUT / GITHUB_STEP_SUMMARY per run. Wall time from spawn to exit (perf_counter) and
the child's peak RSS (wait4's ru_maxrss). Prints one Markdown table row per step.

    python3 bench/action_bench.py RUNS PROGRAM API_URL TOKEN BUILD_ID

Used by bench/action.sh."""
import os
import statistics
import subprocess
import sys
import tempfile
import time


def runner_env(step_dir, inputs, step):
    env = {
        "HOME": "/github/home", "CI": "true", "GITHUB_ACTIONS": "true",
        "GITHUB_SERVER_URL": "https://github.com", "GITHUB_API_URL": "https://api.github.com",
        "GITHUB_REPOSITORY": "org/images", "GITHUB_RUN_ID": "4242",
        "GITHUB_RUN_ATTEMPT": "1", "GITHUB_JOB": "build", "GITHUB_ACTION": step,
        "GITHUB_SHA": "0" * 40,
        "GITHUB_OUTPUT": os.path.join(step_dir, "set_output"),
        "GITHUB_STEP_SUMMARY": os.path.join(step_dir, "step_summary"),
    }
    for name, value in inputs.items():
        env["INPUT_" + name.upper()] = value
    return env


def measure(label, program, inputs, runs, step_of):
    walls, rss = [], []
    for run in range(runs):
        step_dir = tempfile.mkdtemp()
        env = runner_env(step_dir, inputs, step_of(run))
        started = time.perf_counter()
        child = subprocess.Popen([program], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        walls.append((time.perf_counter() - started) * 1000)
        rss.append(usage.ru_maxrss / 1024)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            sys.exit(f"{label} failed with {code}")
    print(f"| {label} | {statistics.median(walls):.1f} | {min(walls):.1f} | "
          f"{max(walls):.1f} | {max(rss):.1f} |")


def main():
    runs, program, api_url, token, build_id = int(sys.argv[1]), *sys.argv[2:6]
    base = {"api-url": api_url, "api-token": token, "build-id": build_id, "summary": "auto",
            "on-backoff": "wait", "max-wait": "900", "commit-status": "false"}
    print("| step | median ms | min ms | max ms | peak RSS MiB |")
    print("|---|---|---|---|---|")
    # A gate on a completed stage: the common case of a re-run (gate, build, history reads).
    measure("gate (skip: a completed stage)", program,
            {**base, "command": "gate", "state": "5"}, runs, lambda run: "gate")
    # A gate on the next stage: run.
    measure("gate (run: the next stage)", program,
            {**base, "command": "gate", "state": "20"}, runs, lambda run: "gate")
    # A report that is recorded each time: `in_progress` on the stage from the run attempt that
    # holds its lease, as a different step each run (a new idempotency key, so not a replay).
    measure("report (in_progress, recorded)", program,
            {**base, "command": "report", "state": "20", "status": "in_progress"},
            runs, lambda run: f"report_{run}")


if __name__ == "__main__":
    main()
