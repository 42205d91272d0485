"""Who owns a run: this process's identity, and whether another owner is still alive.

Owns: `process_owner` (``"host:pid:start"``, the start token telling a reused pid from the
process that recorded it), `parse_owner` and `owner_alive` (what this host can see of an
owner: its pid, whether it is a zombie, when it started).
Must not import: the rest of the journal package (it reads ``/proc`` and nothing else), the
executor, the reactor, the CLI.

What a journal does with it (leases, claims, fenced writes) is `Journal`'s; see `journal`.
"""

from __future__ import annotations

import os
import socket

__all__ = ["owner_alive", "parse_owner", "process_owner"]


def _start_time(pid: int) -> tuple[str, bool] | None:
    """The start time of process ``pid`` as a token, and whether it is a zombie; None if
    there is no such process or no /proc to read it from."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode(), fields[0] in (b"Z", b"X")


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()[:8]
    except OSError:
        return ""


_BOOT_ID = _boot_id()
_OWNERS: dict[tuple[int, str], str] = {}


def process_owner(host: str | None = None) -> str:
    """This process's owner identity: ``"host:pid:start"``.

    ``start`` is the boot id and the pid's start time from ``/proc/<pid>/stat`` on Linux (so
    a pid reused after this process died, or after a reboot, is not taken for it), empty
    elsewhere.

    Args:
        host: the host name to use (``socket.gethostname()`` by default); give each pid
            namespace its own (containers that share a host name).

    Returns:
        The identity.
    """
    host = socket.gethostname() if host is None else host
    pid = os.getpid()
    owner = _OWNERS.get((pid, host))
    if owner is None:
        started = _start_time(pid)
        start = f"{_BOOT_ID}.{started[0]}" if started else ""
        owner = _OWNERS[(pid, host)] = f"{host}:{pid}:{start}"
    return owner


def parse_owner(owner: str) -> tuple[str, int, str]:
    """Split an owner identity into host, pid and start token.

    Args:
        owner: ``"host:pid:start"``.

    Returns:
        ``(host, pid, start)``.

    Raises:
        ValueError: it is not an owner identity.
    """
    host, pid, start = owner.rsplit(":", 2)
    return host, int(pid), start


def owner_alive(owner: str, *, host: str | None = None) -> bool:
    """Whether the process that owns a run is alive, as far as this host can tell.

    An owner on this host is alive while its pid exists, is not a zombie, and (on Linux)
    started when the owner says. An owner on another host cannot be seen from here (nor any
    on Windows): this returns True, and its lease decides.

    Args:
        owner: an identity from `process_owner`.
        host: this host's name as the journal uses it (``socket.gethostname()`` by default).

    Returns:
        False if the owner is certainly gone.
    """
    try:
        owner_host, pid, start = parse_owner(owner)
    except ValueError:
        return True  # not ours to judge: its lease decides
    if owner_host != (socket.gethostname() if host is None else host) or os.name == "nt":
        return True  # (Windows: os.kill(pid, 0) would terminate the process)
    if pid == os.getpid():
        return owner == process_owner(owner_host)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    started = _start_time(pid)
    if started is None:
        return not start  # no /proc: trust the pid (unless the owner was recorded with /proc)
    token, zombie = started
    if zombie:
        return False
    return not start or start == f"{_BOOT_ID}.{token}"
