#!/usr/bin/env python3
"""Where a process's resident memory is, once a second, and its open file descriptors'
peak within each second (sampled every 10 ms): what grows during a soak, and whether the
relay's connection count (one descriptor per connection) set a new high-water mark.

    benches/soak-probe.py PID OUT.csv        # until PID exits (benches/soak.sh PROBE=1)

Columns: elapsed_s; VmRSS, RssAnon, RssFile (KiB, /proc/PID/status); the Rss (KiB) of the
brk heap, of the other anonymous mappings (large allocations, thread stacks) and of the
file-backed ones (the binary's code and data, the C library), from /proc/PID/smaps; the
number of anonymous mappings; open descriptors at the sample, their peak in the second, and
their peak so far. Reads /proc only; writes OUT.csv, flushed every row.
"""

import os
import sys
import time

FIELDS = ("elapsed_s,vmrss_kib,rss_anon_kib,rss_file_kib,heap_kib,mmap_anon_kib,"
          "file_kib,anon_maps,fds,fds_peak_s,fds_peak")


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0])
    return out


def smaps(pid):
    """(heap, other anonymous, file-backed) Rss in KiB, and the anonymous mappings."""
    heap = anon = filed = maps = 0
    kind = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split()
                name = parts[5] if len(parts) > 5 else ""
                if name == "[heap]":
                    kind = "heap"
                elif name.startswith("/"):
                    kind = "file"
                else:
                    kind = "anon"
                    maps += 1
            elif first == "Rss:":
                kib = int(line.split()[1])
                if kind == "heap":
                    heap += kib
                elif kind == "file":
                    filed += kib
                else:
                    anon += kib
    return heap, anon, filed, maps


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: soak-probe.py PID OUT.csv")
    pid, path = sys.argv[1], sys.argv[2]
    fd_dir = f"/proc/{pid}/fd"
    start = time.monotonic()
    peak = 0
    with open(path, "w") as out:
        out.write(FIELDS + "\n")
        next_row = start + 1.0
        second_peak = 0
        while True:
            try:
                n = len(os.listdir(fd_dir))
            except OSError:
                break
            second_peak = max(second_peak, n)
            peak = max(peak, n)
            now = time.monotonic()
            if now >= next_row:
                next_row += 1.0
                try:
                    st = status(pid)
                    heap, anon, filed, maps = smaps(pid)
                except (OSError, ValueError):
                    break
                out.write(f"{now - start:.2f},{st.get('VmRSS', '')},{st.get('RssAnon', '')},"
                          f"{st.get('RssFile', '')},{heap},{anon},{filed},{maps},{n},"
                          f"{second_peak},{peak}\n")
                out.flush()
                second_peak = 0
            time.sleep(0.01)


if __name__ == "__main__":
    main()
