"""A Concourse `check` written the usual Python way (plain `requests`), making the same two
calls as buildstate's `check` with no version: the newest build of the line, then its latest
history entry. The yardstick for bench/resource.sh; not a supported resource."""
import json
import sys

import requests


def main():
    request = json.load(sys.stdin)
    source = request["source"]
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + source["token"]
    base = source["api_url"].rstrip("/")
    params = {"platform": source["platform"], "image_type": source["image_type"], "limit": 1}
    if source.get("key"):
        params["key"] = source["key"]
    builds = session.get(base + "/builds", params=params, timeout=30).json()["builds"]
    if not builds:
        print("[]")
        return
    build = builds[0]
    page = session.get(
        base + "/builds/" + build["id"] + "/history",
        params={"after": build["last_seq"] - 1, "limit": 1},
        timeout=30,
    ).json()
    versions = [
        {"build_id": build["id"], "seq": str(e["seq"]), "state": str(e["state"]), "event": e["kind"]}
        for e in page["entries"]
    ]
    print(json.dumps(versions))


if __name__ == "__main__":
    main()
