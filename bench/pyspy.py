"""Where the service's time goes under load: py-spy samples every gunicorn worker while wrk drives it.

    .venv/bin/python bench/pyspy.py [--users 1000] [--duration 8] [--scenarios me,refresh,send,verify]

Same production setup as ``bench/run.py``. For each scenario it prints the
functions with the most samples, inclusive (the function or anything it
calls) and self (the function's own code), as a share of all samples, and
keeps the collapsed stacks in ``bench/results/profile/`` (needs
``pip install py-spy``). By default only the thread holding the GIL is
sampled: that is where the workers' CPU goes, which is what limits them on
2 cores. ``--wall`` samples every thread, waits included (a thread blocked on
PostgreSQL or Redis shows up in ``Connection.wait`` or a socket read).
``--floor`` profiles the floor (``bench/floor_app.py``) instead of the service.
"""

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import CONNECTIONS, DATABASE_URL, RESULTS, ROOT, SCENARIOS, Bench, ensure_database  # noqa: E402

OUT = RESULTS / "profile"
IDLE = ("select", "poll", "epoll", "wait (threading.py", "accept", "sleep", "_wait_for_tstate_lock")


def py_spy():
    """The py-spy executable next to this Python, or on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def frame_name(frame):
    """``function (module path:line)`` shortened to ``function (file)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", str(ROOT) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


def summarize(raw_file, top):
    """Inclusive and self sample shares per function from py-spy's collapsed stacks (busy samples only)."""
    inclusive, own = collections.Counter(), collections.Counter()
    busy = 0
    for line in raw_file.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")[1:]  # the first entry is the process/thread
        if not frames or any(marker in frames[-1] for marker in IDLE):
            continue
        count = int(count)
        busy += count
        names = [frame_name(frame) for frame in frames]
        for name in set(names):
            inclusive[name] += count
        own[names[-1]] += count
    return busy, inclusive.most_common(top), own.most_common(top)


def profile_scenario(bench, url, pid, scenario, pool, args):
    """Drive one scenario with wrk while py-spy records every worker; print the summary."""
    name, path, mode, _ = scenario
    duration = args.duration
    input_file = bench.prepare(name, bench.scale, pool) if name != "me" else bench.me_file
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration}s", "-s", str(ROOT / "bench" / "wrk.lua"), url]
    wrk = subprocess.Popen([*command, "--", path, mode, str(input_file), "1"], stdout=subprocess.DEVNULL)
    time.sleep(1)
    raw = OUT / f"{name}.collapsed.txt"
    record = [py_spy(), "record", "--pid", str(pid), "--subprocesses", "--rate", "250", "--nonblocking"]
    if not args.wall:
        record.append("--gil")
    subprocess.run(
        [*record, "--duration", str(duration - 2), "--format", "raw", "--output", str(raw)], check=True
    )
    wrk.wait()
    busy, inclusive, own = summarize(raw, args.top)
    print(f"\n== {name} ({path}): {busy} busy samples")
    print("   inclusive  function")
    for function, count in inclusive:
        print(f"   {count / busy:8.1%}  {function}")
    print("   self       function")
    for function, count in own:
        print(f"   {count / busy:8.1%}  {function}")


def main():
    """Seed, start the service, and profile each scenario in turn."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--scenarios", default="me,refresh,send,verify")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--wall", action="store_true", help="sample waiting threads too")
    parser.add_argument("--floor", action="store_true", help="profile the floor (bench/floor_app.py)")
    args = parser.parse_args()
    if py_spy() is None:
        sys.exit("profile: py-spy is not installed (.venv/bin/pip install py-spy)")
    OUT.mkdir(parents=True, exist_ok=True)
    ensure_database(DATABASE_URL)
    bench = Bench(argparse.Namespace(duration=args.duration))
    bench.reset_storage()
    bench.seed_to(args.users)
    bench.scale = args.users
    wanted = args.scenarios.split(",")
    app = "bench.floor_app:app" if args.floor else "wsgi:app"
    with bench.server("profile-" + ("floor" if args.floor else "service"), app, bench.env) as (url, pid):
        bench.me_file = bench.prepare("me", args.users, 0)
        for scenario in SCENARIOS:
            if scenario[0] in wanted:
                profile_scenario(bench, url, pid, scenario, 4000 * args.duration, args)
    bench.fake.shutdown()


if __name__ == "__main__":
    main()
