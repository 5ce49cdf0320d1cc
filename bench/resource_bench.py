"""Times whole processes: each command is spawned RUNS times with an empty environment and its
request on stdin; wall time from spawn to exit (perf_counter) and the child's peak RSS
(wait4's ru_maxrss). An argument `{fresh}` becomes a new empty directory per run. Prints one Markdown table row per command. Used by bench/resource.sh."""
import os
import statistics
import subprocess
import sys
import tempfile
import time


def measure(label, argv, stdin_path, runs, env):
    walls, rss = [], []
    data = open(stdin_path, "rb").read()
    for _ in range(runs):
        # Concourse gives every get and put a fresh directory; so does this ("{fresh}").
        run_argv = [tempfile.mkdtemp() if arg == "{fresh}" else arg for arg in argv]
        started = time.perf_counter()
        child = subprocess.Popen(run_argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env)
        child.stdin.write(data)
        child.stdin.close()
        _, status, usage = os.wait4(child.pid, 0)
        walls.append((time.perf_counter() - started) * 1000)
        rss.append(usage.ru_maxrss / 1024)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            sys.exit(f"{label} failed with {child.returncode}")
    print(f"| {label} | {statistics.median(walls):.1f} | {min(walls):.1f} | "
          f"{max(walls):.1f} | {max(rss):.1f} |")


def main():
    runs = int(sys.argv[1])
    rows = sys.argv[2:]
    print("| command | median ms | min ms | max ms | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for row in rows:
        label, stdin_path, *argv = row.split("\x1f")
        env = {"PATH": os.environ["PATH"]} if argv[0].startswith("python") else {}
        measure(label, argv, stdin_path, runs, env)


if __name__ == "__main__":
    main()
