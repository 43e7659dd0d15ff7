#!/usr/bin/env python3
"""Checks that the crate's `rust-version` tells the truth for the library.

Reads `cargo metadata` over the lockfile (`--locked`, all features) and walks the dependency
graph from this crate through normal and build dependencies only (dev-dependencies do not
count: they build tests and benches, not the library). Fails if any dependency declares a
newer `rust-version` than ours, naming it, and prints the real minimum either way.
"""
import json
import subprocess
import sys


def version_key(version):
    """`1.85` and `1.85.0` alike, as a comparable triple."""
    parts = [int(part) for part in version.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked", "--all-features"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    packages = {package["id"]: package for package in metadata["packages"]}
    nodes = {node["id"]: node for node in metadata["resolve"]["nodes"]}
    root = metadata["resolve"]["root"]
    ours = packages[root].get("rust_version")
    if not ours:
        sys.exit("msrv: Cargo.toml has no rust-version")

    seen, queue = {root}, [root]
    while queue:
        node = nodes[queue.pop()]
        for dep in node["deps"]:
            kinds = {kind["kind"] for kind in dep["dep_kinds"]}
            if kinds <= {"dev"}:
                continue
            if dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                queue.append(dep["pkg"])

    needs = sorted(
        (
            (version_key(packages[id]["rust_version"]), packages[id]["name"], packages[id]["version"])
            for id in seen - {root}
            if packages[id].get("rust_version")
        ),
        reverse=True,
    )
    newest = needs[0] if needs else ((0,), "none", "")
    too_new = [need for need in needs if need[0] > version_key(ours)]
    print(
        f"msrv: rust-version {ours}; the newest any library dependency needs is "
        f"{'.'.join(map(str, newest[0]))} ({newest[1]} {newest[2]})"
    )
    for version, name, package_version in too_new:
        print(
            f"msrv: {name} {package_version} needs Rust {'.'.join(map(str, version))}, "
            f"newer than rust-version {ours}",
            file=sys.stderr,
        )
    if too_new:
        sys.exit(1)


if __name__ == "__main__":
    main()
