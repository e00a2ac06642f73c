"""``ssh://[user@]host[:port]``: a Linux device (Raspberry Pi, Jetson, a server) through the system OpenSSH client.

Why the system client and not paramiko/asyncssh: it honours everything the user already set up (keys in
the agent, ``~/.ssh/config`` host aliases, ProxyJump, known_hosts) with no new dependency. It always runs
with ``BatchMode=yes``, so it never prompts; passwords are refused in URLs and never appear in argv or logs.
Files travel as ``cat`` over the same connection (checked by size), not scp: one code path for errors and
timeouts, and no SFTP subsystem needed on the device (dropbear, minimal images).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import IO, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from autocompress.devices.base import DEVICE_RUNNERS, Completed, RunnerOptions, log, run_process, write_whole
from autocompress.devices.errors import (
    DeviceAuthError,
    DeviceCommandError,
    DeviceDisconnectedError,
    DeviceUnreachableError,
)
from autocompress.devices.shell import Failure, ShellRunner, classify

HOST = re.compile(r"[A-Za-z0-9_:][A-Za-z0-9._%:-]*")  # no leading "-": never an ssh option
USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
SSH_ERROR = 255  # ssh's exit status for its own failures

FAILURES: list[Failure] = [
    (
        re.compile(r"Permission denied|Too many authentication failures|no mutual signature|Authentication failed"),
        DeviceAuthError,
        "ssh authentication failed ({line}); use a key the device accepts (ssh-agent, "
        "~/.ssh/config or the identity_file option)",
    ),
    (
        re.compile(r"Host key verification failed|HOST IDENTIFICATION HAS CHANGED|host key for .* is not known"),
        DeviceAuthError,
        "the device's host key is not trusted ({line}); connect once with `ssh` to check and record it in known_hosts",
    ),
    (
        re.compile(
            r"kex_exchange_identification|Connection refused|No route to host|Could not resolve hostname|"
            r"Name or service not known|Network is unreachable|connect to host .* timed out|"
            r"Connection timed out during banner"
        ),
        DeviceUnreachableError,
        "cannot connect ({line}); check the host, the port and that sshd runs there",
    ),
    (
        re.compile(
            r"closed by remote host|Connection closed by|Connection reset|Broken pipe|client_loop|"
            r"not responding|Received disconnect"
        ),
        DeviceDisconnectedError,
        "the connection dropped while {what} ran ({line})",
    ),
]


class SshOptions(RunnerOptions):
    """How the ``ssh`` client is called; by default everything comes from the user's own ssh setup."""

    ssh: str = Field("ssh", description="the OpenSSH client program")
    identity_file: Path | None = Field(None, description="a private key to use instead of the agent's/config's")
    known_hosts_file: Path | None = Field(None, description="a known_hosts file instead of the user's")
    strict_host_key_checking: Literal["yes", "accept-new", "no"] | None = Field(
        None, description="unset: as the user's ssh config says (OpenSSH's default: ask, i.e. refuse in batch mode)"
    )
    config_file: Path | None = Field(None, description="an ssh config file instead of ~/.ssh/config")
    connect_timeout_s: int = Field(10, gt=0)


class SshTarget(BaseModel):
    """The parsed URL: no password, ever."""

    user: str | None
    host: str
    port: int | None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def parse_ssh_url(url: str) -> SshTarget:
    """``ssh://[user@]host[:port]`` -> :class:`SshTarget`; a ValueError says what is wrong (never the password)."""
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if ":" in userinfo:
        raise ValueError("passwords are not accepted in device URLs; use a key (ssh-agent or ~/.ssh/config)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("an ssh device URL has no path, query or fragment")
    if not hostport or not HOST.fullmatch(parts.hostname or ""):
        raise ValueError("the host is missing or not a host name")
    if userinfo and not USER.fullmatch(userinfo):
        raise ValueError(f"{userinfo!r} is not a user name")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    return SshTarget(user=userinfo or None, host=parts.hostname or "", port=port)


@DEVICE_RUNNERS.decorator()
class SshRunner(ShellRunner):
    """A device with sshd and a POSIX shell; scratch under ``$TMPDIR`` (default /tmp) on it."""

    name = "ssh"
    form = "ssh://user@host[:port]"
    Options = SshOptions

    options: SshOptions

    def __init__(self, url: str, options: SshOptions, target: SshTarget):
        super().__init__(url, options)
        self.target = target
        self.grace_s = options.connect_timeout_s + 20.0

    @classmethod
    def from_url(cls, url: str, options: RunnerOptions) -> SshRunner:
        assert isinstance(options, SshOptions)
        return cls(url, options, parse_ssh_url(url))

    def ssh_argv(self, line: str) -> list[str]:
        """The client's argv for one remote shell ``line``: batch mode, no forwarding, keep-alives."""
        o = self.options
        argv = (
            [o.ssh]
            + (["-F", str(o.config_file)] if o.config_file else [])
            + [
                "-T",
                "-o",
                "BatchMode=yes",
                "-o",
                "PasswordAuthentication=no",
                "-o",
                "KbdInteractiveAuthentication=no",
                "-o",
                f"ConnectTimeout={o.connect_timeout_s}",
                "-o",
                "ServerAliveInterval=5",
                "-o",
                "ServerAliveCountMax=3",
                "-o",
                "ClearAllForwardings=yes",
                "-o",
                "LogLevel=ERROR",
            ]
        )
        if o.identity_file:
            argv += ["-i", str(o.identity_file), "-o", "IdentitiesOnly=yes"]
        if o.known_hosts_file:
            argv += ["-o", f"UserKnownHostsFile={o.known_hosts_file}"]
        if o.strict_host_key_checking:
            argv += ["-o", f"StrictHostKeyChecking={o.strict_host_key_checking}"]
        if self.target.port:
            argv += ["-p", str(self.target.port)]
        return argv + ["--", self.target.destination, line]

    def _transport(
        self, line: str, timeout: float, what: str, stdin: IO | None = None, stdout: IO | None = None
    ) -> Completed:
        log.debug("%s $ %s", self.url, what)
        try:
            done = run_process(self.ssh_argv(line), timeout, stdin=stdin, stdout=stdout)
        except FileNotFoundError:
            raise DeviceUnreachableError(
                self.url,
                f"the ssh client {self.options.ssh!r} is not installed here (Debian: apt-get install openssh-client)",
            ) from None
        except TimeoutError:
            raise self._client_deadline(what, timeout) from None
        if done.returncode == SSH_ERROR:
            err = classify(self.url, done.stderr, FAILURES, what)
            if err is not None:
                raise err
        return done

    def _make_scratch(self) -> str:
        done = self._shell('mktemp -d "${TMPDIR:-/tmp}/autocompress-XXXXXXXX"', 60.0, "making a scratch folder")
        path = done.stdout.strip()
        if not path.startswith("/") or "/autocompress-" not in path:
            raise DeviceCommandError(self.url, f"mktemp printed {path!r}, not a folder")
        return path

    def put(self, local_path: Path | str, remote_name: str, timeout: float | None = None) -> str:
        dest, local = self.path(remote_name), Path(local_path)
        what = f"copying {local.name} to the device"
        log.debug("%s: put %s -> %s", self.url, local, dest)
        with open(local, "rb") as source:
            done = self._shell(
                f"cat > {shlex.quote(dest)} && wc -c < {shlex.quote(dest)}",
                self._timeout(timeout, transfer=True),
                what,
                stdin=source,
            )
        self._check_size(what, local, done)
        return dest

    def get(self, remote_name: str, local_path: Path | str, timeout: float | None = None) -> Path:
        source, limit = self.path(remote_name), self._timeout(timeout, transfer=True)
        what = f"copying back {remote_name}"

        def fill(part: Path) -> None:
            with open(part, "wb") as out:
                self._shell(f"cat {shlex.quote(source)}", limit, what, stdout=out)

        log.debug("%s: get %s -> %s", self.url, source, local_path)
        return write_whole(local_path, fill)
