#!/usr/bin/env python3
"""Control-plane benchmark (scripts/hermes bench control).

For each N it starts a fresh hermes-controller (own database, free loopback ports), runs
hermes-loadgen with N service instances, and reports how long `hermesctl policy add` takes
to be applied by all N instances (p50/p99 over R rounds) and how many serial admin writes
per second the controller accepts while N instances follow it. Prints a table and a JSON
document (also written to $BUILD_DIR/bench/control.json). Exit 0 when the benchmark ran
(a missed target prints MISSED), 1 when it could not run, 2 on a usage error.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TARGET_N = 200


class BenchError(Exception):
    """The benchmark could not run; the message says what failed and what to do."""


def tail(path, lines=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)\n"


def free_ports(count):
    """Loopback ports free right now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cpu_seconds(pid):
    """User + system CPU seconds of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def fs_type(path):
    """The file system type holding path (from /proc/mounts), for the report."""
    best, kind = "", "?"
    try:
        real = os.path.realpath(path)
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1]
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


class Controller:
    """One hermes-controller process on free loopback ports with its own database."""

    def __init__(self, bins, keys, workdir, name):
        self.bins, self.keys = bins, keys
        self.db = os.path.join(workdir, f"{name}.db")
        self.log = os.path.join(workdir, f"{name}.log")
        self.proc = None
        self.api = self.push = None

    def start(self, ready_s=10.0):
        for _ in range(3):  # a port taken between picking and binding: pick again
            api_port, push_port = free_ports(2)
            self.api = f"tcp://127.0.0.1:{api_port}"
            self.push = f"tcp://127.0.0.1:{push_port}"
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [self.bins["controller"], "--api-bind", self.api, "--push-bind", self.push,
                     "--db", self.db, "--keys-dir", self.keys],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            if self._wait_ready(ready_s):
                return
            if self.proc.poll() is None:
                self.stop()
                raise BenchError(f"controller did not answer 'hermesctl status' within "
                                 f"{ready_s:.0f} s; its log:\n{tail(self.log)}")
            if "Address already in use" not in tail(self.log, 5):
                break
        raise BenchError(f"controller exited with code {self.proc.returncode} at start-up; "
                         f"its log:\n{tail(self.log)}")

    def _wait_ready(self, ready_s):
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                rc = subprocess.run(
                    [self.bins["hermesctl"], "-c", self.api, "--keys-dir", self.keys,
                     "--timeout", "500", "--json", "status"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, timeout=5).returncode
            except subprocess.TimeoutExpired:
                rc = -1
            if rc == 0:
                return True
            time.sleep(0.1)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """TERM, then KILL after 5 s. Returns the exit code (None when never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


def run_loadgen(args, bins, keys, ctl, n, workdir):
    log = os.path.join(workdir, f"loadgen-{n}.log")
    cmd = [bins["loadgen"], "--controller", ctl.api, "--push", ctl.push, "--keys-dir", keys,
           "--hermesctl", bins["hermesctl"], "-n", str(n), "--rounds", str(args.rounds),
           "--writes", str(args.writes), "--writes-seconds", str(args.writes_seconds)]
    # Start-up (30 s) + rounds (10 s each + hermesctl 7 s) + writes + catch-up (10 s) + slack.
    budget = 30 + (args.rounds + 1) * 17.5 + args.writes_seconds + 10 + 60
    with open(log, "wb") as err:
        try:
            out = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=err, timeout=budget, env=dict(os.environ, TMPDIR=workdir))
        except subprocess.TimeoutExpired:
            raise BenchError(f"hermes-loadgen -n {n} did not finish within {budget:.0f} s; "
                             f"its log:\n{tail(log)}")
    if out.returncode != 0:
        raise BenchError(f"hermes-loadgen -n {n} failed (exit code {out.returncode}):\n"
                         f"{tail(log)}controller log:\n{tail(ctl.log)}")
    try:
        return json.loads(out.stdout)
    except ValueError:
        raise BenchError(f"hermes-loadgen -n {n} printed no JSON: {out.stdout[:300]!r}")


def bench_one(args, bins, keys, workdir, n):
    ctl = Controller(bins, keys, workdir, f"controller-{n}")
    try:
        ctl.start()
        cpu0 = cpu_seconds(ctl.proc.pid)
        result = run_loadgen(args, bins, keys, ctl, n, workdir)
        cpu1 = cpu_seconds(ctl.proc.pid)
        if not ctl.alive():
            raise BenchError(f"controller died during the run (exit code "
                             f"{ctl.proc.returncode}); its log:\n{tail(ctl.log)}")
    finally:
        code = ctl.stop()
    if code not in (0, None):
        print(f"control.py: warning: controller for N={n} exited with code {code} on TERM "
              f"(log {ctl.log})", file=sys.stderr)
    p99 = result["converge"]["all_ms"]["p99"]
    result["controller_cpu_s"] = (round(cpu1 - cpu0, 3)
                                  if cpu0 is not None and cpu1 is not None else None)
    result["controller_exit"] = code
    result["target_met"] = p99 <= args.target_ms
    return result


def fmt(v, width, digits=1):
    return f"{v:>{width}.{digits}f}" if isinstance(v, (int, float)) else f"{'-':>{width}}"


def print_table(args, results):
    print(f"\nHermes control-plane benchmark: {args.rounds} rounds per N, "
          f"target p99 <= {args.target_ms:.0f} ms at N={TARGET_N}")
    print("convergence = from 'hermesctl policy add' to 'applied' on every instance\n")
    head = (f"{'N':>5}  {'p50 ms':>8}  {'p99 ms':>8}  {'max ms':>8}  {'median-inst p50':>15}  "
            f"{'hermesctl p50':>13}  {'writes/s':>9}  {'write p50 ms':>12}  "
            f"{'controller cpu s':>16}  target")
    print(head)
    print("-" * len(head))
    for r in results:
        c, w = r["converge"], r.get("writes") or {}
        print(f"{r['n']:>5}  {fmt(c['all_ms']['p50'], 8)}  {fmt(c['all_ms']['p99'], 8)}  "
              f"{fmt(c['all_ms']['max'], 8)}  {fmt(c['median_instance_ms']['p50'], 15)}  "
              f"{fmt(c['hermesctl_ms']['p50'], 13)}  {fmt(w.get('per_s'), 9)}  "
              f"{fmt((w.get('rtt_ms') or {}).get('p50'), 12)}  "
              f"{fmt(r.get('controller_cpu_s'), 16, 2)}  "
              f"{'ok' if r['target_met'] else 'MISSED'}"
              f"{'' if not c['timeouts'] else ' (%d rounds timed out)' % c['timeouts']}")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30, help="measured rounds per N (default 30)")
    ap.add_argument("--sizes", default="10,50,200",
                    help="comma-separated instance counts (default 10,50,200)")
    ap.add_argument("--writes", type=int, default=2000,
                    help="admin writes per N, 0 to skip (default 2000)")
    ap.add_argument("--writes-seconds", type=int, default=20,
                    help="time bound of the writes phase per N (default 20)")
    ap.add_argument("--target-ms", type=float, default=1000.0,
                    help=f"p99 convergence target at N={TARGET_N} (default 1000)")
    ap.add_argument("--out", help="JSON file (default $BUILD_DIR/bench/control.json)")
    ap.add_argument("--tmpdir", help="where the temporary folder goes (default $TMPDIR or /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, dbs)")
    args = ap.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--sizes must be integers separated by commas, got '{args.sizes}'")
    if not sizes or any(n < 1 or n > 2000 for n in sizes):
        ap.error("--sizes: each N must be from 1 to 2000")
    if args.rounds < 1 or args.writes < 0 or args.writes_seconds < 1:
        ap.error("--rounds and --writes-seconds must be at least 1, --writes at least 0")

    root = os.environ.get("HERMES_ROOT") or os.path.abspath(
        os.path.join(os.path.dirname(__file__), "..", ".."))
    build = os.environ.get("BUILD_DIR") or os.path.join(root, "build")
    bindir = os.path.join(build, "bin")
    bins = {"controller": os.path.join(bindir, "hermes-controller"),
            "hermesctl": os.path.join(bindir, "hermesctl"),
            "loadgen": os.path.join(bindir, "hermes-loadgen")}
    missing = [p for p in bins.values() if not os.access(p, os.X_OK)]
    if missing:
        print(f"control.py: missing {', '.join(missing)} (build first: scripts/hermes build)",
              file=sys.stderr)
        return 1
    out_path = args.out or os.path.join(build, "bench", "control.json")

    started = datetime.datetime.now(datetime.timezone.utc)
    workdir = tempfile.mkdtemp(prefix="hermes-bench-", dir=args.tmpdir)
    db_fs = fs_type(workdir)
    results = []
    try:
        keys = os.path.join(workdir, "keys")
        kg = subprocess.run([bins["hermesctl"], "keygen", "--dir", keys],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        if kg.returncode != 0:
            raise BenchError(f"hermesctl keygen --dir {keys} failed: {kg.stderr.strip()}")
        for n in sizes:
            print(f"control.py: N={n}: fresh controller, {args.rounds} rounds, "
                  f"up to {args.writes} writes / {args.writes_seconds} s ...",
                  file=sys.stderr, flush=True)
            results.append(bench_one(args, bins, keys, workdir, n))
    except BenchError as e:
        print(f"control.py: the benchmark could not run: {e}", file=sys.stderr)
        if not args.keep:
            print("control.py: (run with --keep to keep the logs and databases)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("control.py: interrupted", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"control.py: kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    at_target = [r for r in results if r["n"] == TARGET_N]
    target_met = at_target[0]["target_met"] if at_target else None
    doc = {
        "benchmark": "control",
        "schema": 1,
        "started": started.isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(),
                 "db_fs": db_fs},
        "params": {"sizes": sizes, "rounds": args.rounds, "writes": args.writes,
                   "writes_seconds": args.writes_seconds, "target_ms": args.target_ms,
                   "controller": "fresh controller and database per N"},
        "target": {"n": TARGET_N, "p99_ms": args.target_ms, "met": target_met},
        "writes_per_s": {str(r["n"]): (r.get("writes") or {}).get("per_s") for r in results},
        "results": results,
    }
    print_table(args, results)
    if target_met is None:
        print(f"target: not measured (N={TARGET_N} not in --sizes)")
    else:
        print(f"target p99 <= {args.target_ms:.0f} ms at N={TARGET_N}: "
              f"{'met' if target_met else 'MISSED'}")
    text = json.dumps(doc, indent=2)
    print(text)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "w") as f:
            f.write(text + "\n")
        print(f"control.py: wrote {out_path}", file=sys.stderr)
    except OSError as e:
        print(f"control.py: cannot write {out_path}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
