"""Start a notebook as several processes of one run on this machine (`kit.runner --processes N`):
each with petals.hosts' variables, supervised, all stopped together when one fails or hangs."""

import os
import signal
import socket
import subprocess
import sys
import time

from petals import hosts, output_folder

# Once one process has finished, the others have this long to finish too before they count as
# hung; a process asked to stop has this long before it is killed.
EXIT_GRACE_SECONDS = 120
STOP_GRACE_SECONDS = 10
POLL_SECONDS = 1.0


def add_process_arguments(parser):
    """--processes and --timeout, the launcher's options."""
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="start N processes of the notebook as one run, coordinated on "
        "127.0.0.1 (petals.hosts); only process 0 prints and writes results",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="stop every process and fail after this many seconds",
    )


def process_folder(output_dir, index):
    return os.path.join(output_dir, f"process-{index}")


def free_port():
    """A TCP port free on 127.0.0.1 now, for the processes' coordinator."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_arguments(arguments):
    """The command line of one process: the same notebook, folder and parameters."""
    command = [arguments.source, arguments.output_dir]
    if arguments.parameters_file:
        command += ["-f", arguments.parameters_file]
    for name, value in arguments.parameter:
        command += ["-p", name, value]
    return command


class Worker:
    """One started process of the run, and every process it has started (its kernel)."""

    def __init__(self, index, popen, log_path):
        import psutil

        self.index, self.popen, self.log_path = index, popen, log_path
        self.known = {popen.pid: psutil.Process(popen.pid)}

    def remember_descendants(self):
        """Note the processes below this one while it lives: a kernel runs in its own session,
        so stopping the process group alone would miss it."""
        import psutil

        try:
            for child in self.known[self.popen.pid].children(recursive=True):
                self.known.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def signal_all(self, number):
        """Send `number` to every known process's group that still runs; False if none runs."""
        import psutil

        running = False
        for process in self.known.values():
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    os.killpg(os.getpgid(process.pid), number)
                    running = True
            except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
                continue
        return running

    def describe(self):
        where = f" (its output: {self.log_path})" if self.log_path else ""
        return f"process {self.index}{where}"


def stop(workers, grace=STOP_GRACE_SECONDS):
    """Stop every worker and what it started: SIGTERM to their process groups, SIGKILL to
    those still running `grace` seconds later (a process hung in a collective ignores
    SIGTERM)."""
    for worker in workers:
        worker.remember_descendants()
    if not any([worker.signal_all(signal.SIGTERM) for worker in workers]):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for worker in workers:
            worker.popen.poll()
        if not any(worker.signal_all(0) for worker in workers):
            return
        time.sleep(POLL_SECONDS)
    for worker in workers:
        worker.signal_all(signal.SIGKILL)
        worker.popen.wait()


def exit_status(returncode):
    """A shell's exit status for a child's return code (-N, killed by signal N, is 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def supervise(
    workers, timeout=None, exit_grace=EXIT_GRACE_SECONDS, stop_grace=STOP_GRACE_SECONDS, stream=None
):
    """Wait for the workers; the run's exit status, with one line naming what went wrong.

    The first process to fail stops the run (its status is the run's); a process still running
    `exit_grace` seconds after another finished is hung; past `timeout` every process is
    stopped (`stop`, with `stop_grace`). The line goes to `stream` (default: stderr).
    """
    stream = stream or sys.stderr
    count = len(workers)
    started = time.monotonic()
    first_finished = None

    def stop_all(line, status):
        print(f"error: {line}", file=stream, flush=True)
        stop(workers, stop_grace)
        return status

    while True:
        for worker in workers:
            worker.remember_descendants()
        codes = [worker.popen.poll() for worker in workers]
        failed = [
            (worker, code)
            for worker, code in zip(workers, codes, strict=True)
            if code not in (None, 0)
        ]
        now = time.monotonic()
        if failed:
            worker, code = failed[0]
            status = exit_status(code)
            return stop_all(
                f"{worker.describe()} of {count} failed with exit status {status}; stopped "
                "the others",
                max(exit_status(code) for _, code in failed),
            )
        if all(code == 0 for code in codes):
            return 0
        if first_finished is None and 0 in codes:
            first_finished = now
        running = ", ".join(
            worker.describe() for worker, code in zip(workers, codes, strict=True) if code is None
        )
        if first_finished is not None and now - first_finished > exit_grace:
            return stop_all(
                f"{running} of {count} still running {exit_grace:g} s after another finished: "
                "hung; stopped it",
                1,
            )
        if timeout is not None and now - started > timeout:
            return stop_all(f"timed out after {timeout:g} s; stopped {running} of {count}", 124)
        time.sleep(POLL_SECONDS)


def launch_processes(arguments):
    """Run the notebook as `arguments.processes` processes coordinated on 127.0.0.1.

    Process 0 streams its output here and writes the results; process I > 0 writes its output
    and executed notebook in OUTPUT_DIR/process-I. Each process runs in its own session, so a
    failure, Ctrl-C, SIGTERM or the timeout stops them all by process id. Returns the exit
    status.
    """
    if arguments.processes < 1:
        print(f"error: --processes must be at least 1, got {arguments.processes}", file=sys.stderr)
        return 2
    try:
        output_folder.prepare(arguments.output_dir, replace=False)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    address = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "kit.runner", *worker_arguments(arguments)]
    workers = []

    def terminated(number, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        for index in range(arguments.processes):
            environment = {
                **os.environ,
                hosts.ADDRESS_VARIABLE: address,
                hosts.COUNT_VARIABLE: str(arguments.processes),
                hosts.INDEX_VARIABLE: str(index),
            }
            log_path = None
            if index:
                folder = process_folder(arguments.output_dir, index)
                os.makedirs(folder, exist_ok=True)
                log_path = os.path.join(folder, "output.log")
            with open(log_path or os.devnull, "w") as log:
                popen = subprocess.Popen(
                    command,
                    env=environment,
                    start_new_session=True,
                    stdout=log if index else None,
                    stderr=subprocess.STDOUT if index else None,
                )
            workers.append(Worker(index, popen, log_path))
        return supervise(workers, arguments.timeout)
    except KeyboardInterrupt:
        print(f"interrupted: stopping {len(workers)} processes", file=sys.stderr, flush=True)
        stop(workers)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
