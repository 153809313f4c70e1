"""A fake SLURM on one machine, for tests: ``sbatch``, ``srun``, ``sacct``, ``scancel`` and
``scontrol requeue``, as much of them as submitit (and hydra-submitit-launcher) uses.

Called as ``python fakeslurm.py COMMAND ARGS...`` (the ``fake_slurm`` fixture writes one wrapper
script per command into a bin folder put first on PATH). Standard library only, POSIX and
Linux (``/proc``). Jobs really run, on this machine, in the background: ``sbatch`` starts one
detached *runner* (``fakeslurm.py __run JOBDIR``) per array task, which waits for a free slot,
runs the batch script in a process group of its own and records the task's state. ``scancel``
and ``scontrol requeue`` only write the new state: the task's runner sees it and stops the job
(SIGCONT and SIGTERM to its process group, SIGKILL after KillWait), as slurmctld does
asynchronously. A task ends when the last process of its group has ended, not when its batch
shell does (SLURM waits for every process of the job's cgroup): a requeued task runs again only
once its earlier instance is gone.

Environment:

  FAKE_SLURM_STATE       state folder (required)
  FAKE_SLURM_SLOTS       how many tasks run at once (default 2)
  FAKE_SLURM_KILL_WAIT   seconds between SIGTERM and SIGKILL (default 30, as SLURM's KillWait)
  FAKE_SLURM_PARTITIONS  the partitions sbatch accepts (default cpu,gpu,debug)

State: STATE/commands.log (every call), STATE/next_id, STATE/slots/, and per task
STATE/jobs/<id>_<task>/ (<id>/ without --array): submit.json, env.json (sbatch's environment,
as --export=ALL), state, restarts, exitcode, pgid, step_pids (one line per srun), events (a log)
and runner.log.

Not modelled: --time and --signal (accepted, never enforced: no time limit, no USR2), cgroup
limits, several nodes or tasks per job, --dependency, priorities; sacct's other fields.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

try:
    STATE = Path(os.environ["FAKE_SLURM_STATE"])
except KeyError:
    sys.exit("fakeslurm: FAKE_SLURM_STATE is not set (the state folder)")
JOBS = STATE / "jobs"
NODE = "fakenode1"
SLOTS = int(os.environ.get("FAKE_SLURM_SLOTS", "2"))
KILL_WAIT = float(os.environ.get("FAKE_SLURM_KILL_WAIT", "30"))
UID = os.getuid()
POLL = 0.1  # how often a runner looks at its task's state and its processes

ENDED = ("COMPLETED", "FAILED", "CANCELLED")
STOPPING = ("CANCELLED", "REQUEUED")  # a running task's runner stops its processes


def event(jobdir: Path, text: str) -> None:
    with open(jobdir / "events", "a") as f:
        f.write(f"{time.strftime('%H:%M:%S')} {text}\n")


def read(jobdir: Path, name: str, default: str = "") -> str:
    try:
        return (jobdir / name).read_text().strip()
    except FileNotFoundError:
        return default


def write(jobdir: Path, name: str, value) -> None:
    tmp = jobdir / f".{name}.tmp{os.getpid()}"
    tmp.write_text(f"{value}\n")
    os.replace(tmp, jobdir / name)


def set_state(jobdir: Path, state: str) -> None:
    write(jobdir, "state", state)
    event(jobdir, f"state {state}")


@contextmanager
def task_lock(jobdir: Path):
    """Held while a task's state is read and changed: by its runner, scancel and scontrol."""
    with open(jobdir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def task_key(jobdir: Path) -> tuple[int, int]:
    base, _, task = jobdir.name.partition("_")
    return int(base), int(task) if task else -1


def all_jobdirs() -> list[Path]:
    return sorted(JOBS.iterdir(), key=task_key) if JOBS.exists() else []


# ---------------------------------------------------------------- sbatch
FLAGS = {"parsable", "requeue", "no-requeue", "exclusive", "hold", "test-only"}
SHORT = {"-p": "partition", "-t": "time", "-c": "cpus-per-task", "-J": "job-name", "-o": "output",
         "-e": "error", "-a": "array", "-N": "nodes", "-n": "ntasks", "-D": "chdir"}


def parse_sbatch_args(args: list[str], opts: dict) -> list[str]:
    """``--key=value``, ``--key value``, ``--flag`` and ``-k value`` into ``opts``; returns the
    rest (the script and its arguments)."""
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            key, eq, value = a[2:].partition("=")
            if not eq:
                if key in FLAGS:
                    value = True
                else:
                    i += 1
                    value = args[i]
            opts[key.replace("_", "-")] = value
        elif a.startswith("-") and len(a) > 1:
            key = SHORT.get(a[:2])
            if key is None:
                raise SystemExit(f"sbatch: error: the fake sbatch does not know option {a}")
            if len(a) > 2:
                value = a[2:]
            else:
                i += 1
                value = args[i]
            opts[key] = value
        else:
            return args[i:]
        i += 1
    return []


def script_directives(text: str) -> dict:
    opts: dict = {}
    for line in text.splitlines()[1:]:
        s = line.strip()
        if s.startswith("#SBATCH"):
            parse_sbatch_args(shlex.split(s[len("#SBATCH"):]), opts)
        elif s and not s.startswith("#"):
            break  # sbatch reads directives up to the script's first command
    return opts


def parse_array(spec: str) -> tuple[list[int], int | None]:
    """``0-3,7%2`` -> ([0, 1, 2, 3, 7], 2)."""
    spec, _, throttle = spec.partition("%")
    ids: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        ids.extend(range(int(lo), int(hi or lo) + 1))
    return ids, int(throttle) if throttle else None


def next_job_id(count: int) -> int:
    with open(STATE / "next_id.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = STATE / "next_id"
        first = int(path.read_text()) if path.exists() else 1000
        path.write_text(str(first + count))
    return first


def sbatch(argv: list[str]) -> int:
    cli: dict = {}
    rest = parse_sbatch_args(argv, cli)
    if not rest:
        print("sbatch: error: the fake sbatch reads its script from a file only", file=sys.stderr)
        return 1
    script = Path(rest[0]).resolve()
    text = script.read_text()
    if not text.startswith("#!"):
        print("sbatch: error: This does not look like a batch script.  The first\n"
              "sbatch: error: line must start with #! followed by the path to an interpreter.",
              file=sys.stderr)
        return 1
    opts = script_directives(text)
    opts.update(cli)  # the command line wins over #SBATCH lines
    partition = opts.get("partition")
    if partition is not None and partition not in os.environ.get("FAKE_SLURM_PARTITIONS", "cpu,gpu,debug").split(","):
        print(f"sbatch: error: invalid partition specified: {partition}\n"
              "sbatch: error: Batch job submission failed: Invalid partition name specified", file=sys.stderr)
        return 1
    tasks, throttle = parse_array(opts["array"]) if "array" in opts else ([None], None)
    first = next_job_id(len(tasks))
    submit = {"opts": opts, "script": str(script), "cwd": os.getcwd(), "tasks": tasks, "throttle": throttle,
              "array_job_id": None if tasks == [None] else first}
    JOBS.mkdir(parents=True, exist_ok=True)
    env = json.dumps(dict(os.environ))
    for n, task in enumerate(tasks):
        jobdir = JOBS / (str(first) if task is None else f"{first}_{task}")
        jobdir.mkdir()
        (jobdir / "env.json").write_text(env)
        (jobdir / "submit.json").write_text(json.dumps(dict(submit, task=task, job_id=first + n, text=text)))
        write(jobdir, "restarts", 0)
        set_state(jobdir, "PENDING")
        with open(jobdir / "runner.log", "a") as log:
            subprocess.Popen([sys.executable, *python_flags(), str(Path(__file__).resolve()), "__run", str(jobdir)],
                             start_new_session=True, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    print(first if opts.get("parsable") else f"Submitted batch job {first}")
    return 0


def python_flags() -> list[str]:
    return [f for f, on in (("-I", sys.flags.isolated), ("-S", sys.flags.no_site)) if on]


# ---------------------------------------------------------------- the runner of one task
def expand(pattern: str, env: dict) -> str:
    """sbatch's and srun's file name patterns (one node, one task)."""
    replacements = {
        "%%": "\0", "%A": env.get("SLURM_ARRAY_JOB_ID", env["SLURM_JOB_ID"]),
        "%a": env.get("SLURM_ARRAY_TASK_ID", "4294967294"), "%j": env["SLURM_JOB_ID"],
        "%x": env.get("SLURM_JOB_NAME", ""), "%N": NODE, "%n": "0", "%t": "0", "%s": "0",
        "%u": env.get("USER", str(UID)),
    }
    for key, value in replacements.items():
        pattern = pattern.replace(key, value)
    return pattern.replace("\0", "%")


def acquire_slot(jobdir: Path):
    """A slot's lock file, held while the task runs; None when the task was cancelled first."""
    slots = STATE / "slots"
    slots.mkdir(parents=True, exist_ok=True)
    base, task = task_key(jobdir)
    while True:
        if read(jobdir, "state") != "PENDING":
            return None
        # SLURM starts an array's pending tasks in index order
        if not any(read(other, "state") == "PENDING" and task_key(other)[1] < task
                   for other in JOBS.glob(f"{base}_*")):
            for k in range(SLOTS):
                f = open(slots / f"slot{k}", "w")
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return f
                except BlockingIOError:
                    f.close()
        time.sleep(0.3)


def task_env(jobdir: Path, submit: dict, restarts: int) -> dict:
    opts = submit["opts"]
    env = json.loads((jobdir / "env.json").read_text())
    nodes = int(opts.get("nodes", 1))
    ntasks = int(opts["ntasks-per-node"]) * nodes if "ntasks-per-node" in opts else int(opts.get("ntasks", 1))
    cpus = int(opts.get("cpus-per-task", 1))
    env.pop("SLURM_CPUS_PER_TASK", None)
    env.update({
        "SLURM_JOB_ID": str(submit["job_id"]), "SLURM_JOBID": str(submit["job_id"]),
        "SLURM_JOB_NAME": str(opts.get("job-name", Path(submit["script"]).name)),
        "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_NNODES": str(nodes),
        "SLURM_JOB_NODELIST": NODE, "SLURM_NODELIST": NODE, "SLURMD_NODENAME": NODE,
        "SLURM_NTASKS": str(ntasks), "SLURM_NPROCS": str(ntasks), "SLURM_TASKS_PER_NODE": str(ntasks),
        "SLURM_JOB_CPUS_PER_NODE": str(cpus * ntasks),
        "SLURM_SUBMIT_DIR": submit["cwd"], "SLURM_SUBMIT_HOST": os.uname().nodename,
        "SLURM_CLUSTER_NAME": "fakecluster", "SLURM_JOB_UID": str(UID),
        "SLURM_JOB_USER": env.get("USER", str(UID)), "SLURM_RESTART_COUNT": str(restarts),
        "SLURM_JOB_PARTITION": str(opts.get("partition", "cpu")),
        "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",  # the batch step's
        "ENVIRONMENT": "BATCH", "FAKE_SLURM_JOBDIR": str(jobdir),
    })
    if "cpus-per-task" in opts:
        env["SLURM_CPUS_PER_TASK"] = str(cpus)
    if submit["array_job_id"] is not None:
        tasks = submit["tasks"]
        env.update({
            "SLURM_ARRAY_JOB_ID": str(submit["array_job_id"]), "SLURM_ARRAY_TASK_ID": str(submit["task"]),
            "SLURM_ARRAY_TASK_COUNT": str(len(tasks)),
            "SLURM_ARRAY_TASK_MIN": str(min(tasks)), "SLURM_ARRAY_TASK_MAX": str(max(tasks)),
        })
    return env


def group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a live (not zombie) process: an orphan that ended
    stays a zombie until PID 1 reaps it, which some containers' PID 1 never does."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def signal_group(pgid: int, *signums: int) -> None:
    for signum in signums:
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            return


def run(jobdir: Path) -> None:
    submit = json.loads((jobdir / "submit.json").read_text())
    opts = submit["opts"]
    while True:
        slot = acquire_slot(jobdir)
        if slot is None:
            event(jobdir, "never started (cancelled while pending)")
            return
        restarts = int(read(jobdir, "restarts", "0"))
        env = task_env(jobdir, submit, restarts)
        cwd = opts.get("chdir", submit["cwd"])
        out_pattern = opts.get("output", "slurm-%A_%a.out" if submit["array_job_id"] is not None else "slurm-%j.out")
        out_path = Path(cwd, expand(out_pattern, env))
        err_path = Path(cwd, expand(opts.get("error", out_pattern), env))
        mode = "a" if opts.get("open-mode") == "append" or restarts else "w"
        try:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(out_path, mode)
            err = out if err_path == out_path else open(err_path, mode)
        except OSError as e:  # SLURM fails such a job without a word
            event(jobdir, f"cannot open its output: {e}")
            write(jobdir, "exitcode", "1:0")
            set_state(jobdir, "FAILED")
            return
        script = jobdir / "slurm_script"
        script.write_text(submit["text"] + "\n")
        script.chmod(0o755)
        (jobdir / "step_pids").write_text("")
        with task_lock(jobdir):
            if read(jobdir, "state") != "PENDING":  # cancelled meanwhile
                event(jobdir, "never started (cancelled while pending)")
                return
            proc = subprocess.Popen([str(script)], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, start_new_session=True)
            write(jobdir, "pgid", proc.pid)
            set_state(jobdir, "RUNNING")
        out.close()
        err.close()
        event(jobdir, f"started the batch script, pid {proc.pid} (restart {restarts})")
        killed_at = None
        while proc.poll() is None or group_alive(proc.pid):
            if killed_at is None and read(jobdir, "state") in STOPPING:
                event(jobdir, "stopping the job: SIGTERM, SIGKILL after KillWait")
                signal_group(proc.pid, signal.SIGCONT, signal.SIGTERM)
                killed_at = time.monotonic()
            elif killed_at is not None and time.monotonic() - killed_at > KILL_WAIT:
                signal_group(proc.pid, signal.SIGKILL)
            time.sleep(POLL)
        rc = proc.returncode
        event(jobdir, f"the job has ended, its batch script with rc={rc}")
        slot.close()
        with task_lock(jobdir):
            state = read(jobdir, "state")
            if state == "REQUEUED":
                write(jobdir, "restarts", restarts + 1)
                set_state(jobdir, "PENDING")
                continue
            write(jobdir, "exitcode", f"{rc}:0" if rc >= 0 else f"0:{-rc}")
            if state != "CANCELLED":
                set_state(jobdir, "COMPLETED" if rc == 0 else "FAILED")
        return


# ---------------------------------------------------------------- srun (one step, one task)
SRUN_VALUES = {"--output", "-o", "--error", "-e", "--ntasks", "-n", "--nodes", "-N", "--cpus-per-task", "-c",
               "--cpu-bind", "--mem", "--export", "--job-name", "-J", "--open-mode"}


def srun(argv: list[str]) -> int:
    jobdir = os.environ.get("FAKE_SLURM_JOBDIR")
    if jobdir is None:
        print("srun: error: the fake srun runs only inside a fake sbatch job", file=sys.stderr)
        return 1
    opts, i = {}, 0
    while i < len(argv) and argv[i].startswith("-"):
        key, eq, value = argv[i].partition("=")
        if not eq and key in SRUN_VALUES:
            i += 1
            value = argv[i]
        opts[key] = value if eq or key in SRUN_VALUES else True
        i += 1
    command = argv[i:]
    if not command:
        print("srun: fatal: No command given to execute.", file=sys.stderr)
        return 1
    os.environ.update({"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_STEP_ID": "0",
                       "SLURM_STEPID": "0", "SLURM_STEP_NUM_TASKS": "1", "SLURM_STEP_NUM_NODES": "1",
                       "SLURM_STEP_NODELIST": NODE})
    os.environ.pop("ENVIRONMENT", None)
    with open(Path(jobdir, "step_pids"), "a") as f:
        f.write(f"{os.getpid()}\n")
    event(Path(jobdir), f"srun step, pid {os.getpid()}: {shlex.join(command)}")
    out = opts.get("--output") or opts.get("-o")
    err = opts.get("--error") or opts.get("-e")
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    if out:
        fd = os.open(expand(out, os.environ), flags, 0o644)
        os.dup2(fd, 1)
        if not err:
            os.dup2(fd, 2)
    if err:
        os.dup2(os.open(expand(err, os.environ), flags, 0o644), 2)
    os.execvp(command[0], command)  # the step is this process: its pid is the step's


# ---------------------------------------------------------------- sacct
def collapse(ids: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3,5'."""
    ids, parts = sorted(ids), []
    start = prev = ids[0]
    for x in ids[1:] + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = x
    return ",".join(parts)


def sacct(argv: list[str]) -> int:
    fields = ["JobID", "JobName", "Partition", "AllocCPUS", "State", "ExitCode"]
    ids: list[str] = []
    parsable2 = noheader = False
    i = 0
    while i < len(argv):
        key, eq, value = argv[i].partition("=")
        if key in ("-o", "--format", "-j", "--jobs"):
            if not eq:
                i += 1
                value = argv[i]
            if key in ("-o", "--format"):
                fields = value.split(",")
            else:
                ids.extend(value.split(","))
        elif key in ("--parsable2", "-P"):
            parsable2 = True
        elif key in ("-n", "--noheader"):
            noheader = True
        i += 1
    lines, pending = [], {}
    for jobdir in all_jobdirs():
        if ids and jobdir.name.split("_")[0] not in ids and jobdir.name not in ids:
            continue
        state = read(jobdir, "state")
        submit = json.loads((jobdir / "submit.json").read_text())
        if state == "PENDING" and "_" in jobdir.name and read(jobdir, "restarts", "0") == "0":
            # sacct shows an array's never-started tasks in one row: 1000_[1-2%3]
            pending.setdefault(jobdir.name.split("_")[0], []).append((task_key(jobdir)[1], submit))
            continue
        lines.extend(sacct_rows(jobdir.name, state, jobdir, submit, fields))
    for base, items in pending.items():
        throttle = items[0][1]["throttle"]
        name = f"{base}_[{collapse([t for t, _ in items])}{f'%{throttle}' if throttle else ''}]"
        lines.extend(sacct_rows(name, "PENDING", None, items[0][1], fields))
    # always sacct's --parsable (a trailing |) or --parsable2 format, never its table
    end = "" if parsable2 else "|"
    for row in ([] if noheader else [fields]) + lines:
        print("|".join(row) + end)
    return 0


def sacct_rows(name: str, state: str, jobdir: Path | None, submit: dict, fields: list[str]) -> list[list[str]]:
    running = jobdir is not None and state != "PENDING"

    def row(job_id: str, job_name: str) -> list[str]:
        values = {"JobID": job_id, "JobName": job_name,
                  "State": f"CANCELLED by {UID}" if state == "CANCELLED" else state,
                  "NodeList": NODE if running else "None assigned",
                  "ExitCode": read(jobdir, "exitcode", "0:0") if jobdir else "0:0",
                  "Partition": str(submit["opts"].get("partition", "cpu")),
                  "AllocCPUS": str(submit["opts"].get("cpus-per-task", 1))}
        return [values.get(f, "") for f in fields]

    rows = [row(name, str(submit["opts"].get("job-name", "sbatch")))]
    if running:  # the job's steps, which submitit skips
        rows.append(row(f"{name}.batch", "batch"))
        if read(jobdir, "step_pids"):
            rows.append(row(f"{name}.0", "python"))
    return rows


# ---------------------------------------------------------------- scancel, scontrol requeue
def matching(job_id: str, command: str) -> list[Path]:
    found = [d for d in all_jobdirs() if job_id in (d.name, d.name.split("_")[0])]
    if not found:
        print(f"{command}: error: Kill job error on job id {job_id}: Invalid job id specified", file=sys.stderr)
    return found


def scancel(argv: list[str]) -> int:
    """``scancel ID[_TASK]...``: the tasks are CANCELLED (their runners stop running ones);
    ``--signal SIG`` only sends SIG to the running tasks' steps (``--full``/``--batch``: their
    whole process group)."""
    sig, ids, full, i = None, [], False, 0
    while i < len(argv):
        a = argv[i]
        if a in ("--signal", "-s"):
            i += 1
            sig = argv[i]
        elif a.startswith("--signal="):
            sig = a.split("=", 1)[1]
        elif a in ("--full", "-f", "--batch", "-b"):
            full = True
        else:
            ids.append(a)
        i += 1
    rc = 0
    for job_id in ids:
        found = matching(job_id, "scancel")
        rc |= not found
        for jobdir in found:
            with task_lock(jobdir):
                state = read(jobdir, "state")
                if sig is None and state in ("PENDING", "RUNNING", "REQUEUED"):
                    set_state(jobdir, "CANCELLED")
            if sig is not None:
                if state == "RUNNING":
                    name = sig if sig.startswith("SIG") else f"SIG{sig}"
                    signum = getattr(signal, name, None) or int(sig)
                    event(jobdir, f"scancel --signal {name}")
                    steps = [int(p) for p in read(jobdir, "step_pids").split()]
                    if full or not steps:
                        signal_group(int(read(jobdir, "pgid")), signum)
                    for pid in steps:
                        try:
                            os.kill(pid, signum)
                        except ProcessLookupError:
                            pass
    return int(rc)


def squeue(argv: list[str]) -> int:
    """``squeue -h -o %i -j ID[,ID...]``: the tasks of those jobs still queued, running, or
    completing (SLURM's CG: cancelled, but its processes have not ended yet), one id per line."""
    ids = argv[argv.index("-j") + 1].split(",") if "-j" in argv else None
    for jobdir in sorted(all_jobdirs(), key=task_key):
        if ids is not None and jobdir.name.split("_")[0] not in ids and jobdir.name not in ids:
            continue
        pgid = read(jobdir, "pgid")
        if read(jobdir, "state") in ("PENDING", "RUNNING", "REQUEUED") or (pgid and group_alive(int(pgid))):
            print(jobdir.name)
    return 0


def scontrol(argv: list[str]) -> int:
    """``scontrol requeue ID[_TASK][,...]``: a running task is stopped and runs again (with
    SLURM_RESTART_COUNT one more), as SLURM's preemption in REQUEUE mode and submitit's own
    preemption handler do."""
    if len(argv) != 2 or argv[0] != "requeue":
        print(f"scontrol: error: the fake scontrol knows only 'requeue ID', not: {shlex.join(argv)}",
              file=sys.stderr)
        return 1
    rc = 0
    for job_id in argv[1].split(","):
        found = matching(job_id, "scontrol")
        rc |= not found
        for jobdir in found:
            with task_lock(jobdir):
                if read(jobdir, "state") == "RUNNING":
                    set_state(jobdir, "REQUEUED")
                    continue
            print(f"Requested operation is presently disabled for job {jobdir.name}", file=sys.stderr)
            rc = 1
    return rc


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "__run":
        run(Path(sys.argv[2]))
        return 0
    commands = {"sbatch": sbatch, "srun": srun, "sacct": sacct, "scancel": scancel, "scontrol": scontrol,
                "squeue": squeue}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(f"fakeslurm: usage: fakeslurm.py {{{','.join(commands)}}} ARGS...", file=sys.stderr)
        return 2
    if sys.argv[1] in ("scontrol", "scancel"):
        # Called from inside a job (submitit requeues its job with scontrol), it must outlive
        # the stop it asks for: SLURM's controller does the stopping, not the job's own processes.
        os.setpgid(0, 0)
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "commands.log", "a") as f:
        f.write(f"{time.strftime('%H:%M:%S')} pid={os.getpid()} {shlex.join(sys.argv[1:])}\n")
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
