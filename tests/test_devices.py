"""autocompress.devices: device URLs, the local runner, and the adb runner against a fake ``adb`` on PATH."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from autocompress.devices import (
    DEVICE_RUNNERS,
    DeviceAuthError,
    DeviceCommandError,
    DeviceDisconnectedError,
    DeviceTimeoutError,
    DeviceUnreachableError,
    open_device,
)
from autocompress.devices.adb import AdbRunner
from autocompress.devices.ssh import SshRunner
from autocompress.errors import ConfigError

FORMS = "adb://serial, local, ssh://user@host[:port]"


def test_runners_are_registered_by_scheme():
    assert DEVICE_RUNNERS.names() == ["adb", "local", "ssh"]


@pytest.mark.parametrize(
    "url,user,host,port",
    [
        ("ssh://pi@raspberrypi.local", "pi", "raspberrypi.local", None),
        ("ssh://pi@10.0.0.7:2222", "pi", "10.0.0.7", 2222),
        ("ssh://my-pi5", None, "my-pi5", None),  # a Host alias of ~/.ssh/config
        ("ssh://root@[::1]:22/", "root", "::1", 22),
    ],
)
def test_ssh_urls_parse(url, user, host, port):
    runner = open_device(url)
    assert isinstance(runner, SshRunner)
    assert (runner.target.user, runner.target.host, runner.target.port) == (user, host, port)


@pytest.mark.parametrize(
    "url,problem",
    [
        ("ssh://pi:raspberry@pi.local", "passwords are not accepted"),
        ("ssh://pi:@pi.local", "passwords are not accepted"),
        ("ssh://", "host is missing"),
        ("ssh://-oProxyCommand=touch%20x", "not a host name"),
        ("ssh://pi@host:0", "port must be"),
        ("ssh://pi@host:http", "port must be"),
        ("ssh://pi@host/home/pi", "no path"),
        ("ssh://pi;reboot@host", "not a user name"),
        ("adb://", "serial"),
        ("adb://-s", "serial"),
        ("local://pi", "takes no host"),
        ("telnet://pi", "unknown device"),
        ("raspberrypi.local", "unknown device"),
    ],
)
def test_bad_urls_are_one_line_config_errors_naming_field_and_forms(url, problem):
    with pytest.raises(ConfigError) as err:
        open_device(url, field="targets[0].device")
    message = str(err.value)
    assert problem in message and message.startswith("targets[0].device: ") and message.endswith(FORMS)
    assert "\n" not in message


def test_a_password_never_reaches_messages_or_logs(caplog):
    caplog.set_level("DEBUG", logger="autocompress.devices")
    with pytest.raises(ConfigError) as err:
        open_device("ssh://pi:hunter2@pi.local:22")
    assert "hunter2" not in str(err.value) and "pi:***@pi.local" in str(err.value)
    assert "hunter2" not in caplog.text


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match=r"--device timeout_s: Input should be greater than 0"):
        open_device("local", timeout_s=0)
    with pytest.raises(ConfigError, match=r"--device password: Extra inputs are not permitted"):
        open_device("ssh://pi@pi.local", password="x")
    with pytest.raises(ConfigError, match=r"strict_host_key_checking"):
        open_device("ssh://pi@pi.local", strict_host_key_checking="maybe")


# --- local ------------------------------------------------------------------------------------------


def test_local_put_run_get_and_cleanup(tmp_path):
    (tmp_path / "in.txt").write_text("hello device\n")
    with open_device("local") as device:
        scratch = Path(device.scratch)
        remote = device.put(tmp_path / "in.txt", "in.txt")
        assert remote == f"{scratch}/in.txt" and scratch.name.startswith("autocompress-")
        done = device.run(["sh", "-c", "tr a-z A-Z < in.txt > out.txt; echo done; echo warn >&2; exit 3"])
        assert (done.stdout, done.stderr, done.returncode) == ("done\n", "warn\n", 3) and done.seconds < 10
        assert device.get("out.txt", tmp_path / "out.txt").read_text() == "HELLO DEVICE\n"
        assert device.which("sh").endswith("/sh") and device.which("no-such-program-here") is None
        assert device.run(["no-such-program-here"]).returncode == 127
    assert not scratch.exists()


def test_local_scratch_is_removed_when_the_body_raises():
    with pytest.raises(KeyError):
        with open_device("local") as device:
            scratch = Path(device.scratch)
            raise KeyError("boom")
    assert not scratch.exists()


def test_local_timeout_kills_the_command_and_its_children():
    with open_device("local") as device:
        start = time.monotonic()
        with pytest.raises(
            DeviceTimeoutError,
            match=r"^local: `sh -c 'sleep 30; echo late'` did not finish "
            r"within 0.5 s and was killed$",
        ):
            device.run(["sh", "-c", "sleep 30; echo late"], timeout=0.5)
        assert time.monotonic() - start < 5


def test_names_in_the_scratch_folder_are_plain(tmp_path):
    (tmp_path / "f").write_text("x")
    with open_device("local") as device:
        for bad in ("../f", "/etc/passwd", "-rf", "a/b", "..", ""):
            with pytest.raises(ValueError, match="plain file name"):
                device.put(tmp_path / "f", bad)


def test_a_failed_get_leaves_nothing_behind(tmp_path):
    (tmp_path / "old.txt").write_text("previous")
    with open_device("local") as device:
        with pytest.raises(DeviceCommandError, match="cannot copy back 'missing'"):
            device.get("missing", tmp_path / "old.txt")
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"] and (tmp_path / "old.txt").read_text() == "previous"


def test_a_runner_outside_its_with_block_says_so(tmp_path):
    device = open_device("local")
    with pytest.raises(RuntimeError, match="context manager"):
        device.run(["true"])


# --- adb, against a fake adb on PATH ------------------------------------------------------------------

FAKE_ADB = '''#!{python}
"""A fake adb: records its argv, emulates push/pull/shell on a folder standing in for the phone."""
import json, os, shutil, subprocess, sys

root, log = os.environ["FAKE_ADB_ROOT"], os.environ["FAKE_ADB_LOG"]
args = sys.argv[1:]
with open(log, "a") as f:
    f.write(json.dumps(args) + "\\n")
calls = sum(1 for _ in open(log))
if args[:2] != ["-s", os.environ.get("FAKE_ADB_SERIAL", "emulator-5554")]:
    sys.exit(print("adb: device '%s' not found" % args[1], file=sys.stderr) or 1)
if os.environ.get("FAKE_ADB_STATE") == "unauthorized":
    sys.exit(print("error: device unauthorized.", file=sys.stderr) or 1)
if str(calls) == os.environ.get("FAKE_ADB_CLOSE_AT"):
    sys.exit(print("error: closed", file=sys.stderr) or 1)
here = lambda path: root + path
command, rest = args[2], args[3:]
if command == "push":
    shutil.copyfile(rest[0], here(rest[1]))
    print("%s: 1 file pushed, 0 skipped." % rest[0])
elif command == "pull":
    if not os.path.exists(here(rest[0])):
        sys.exit(print("adb: error: failed to stat remote object '%s': No such file or directory" % rest[0],
                       file=sys.stderr) or 1)
    shutil.copyfile(here(rest[0]), rest[1])
elif command == "shell":
    line = " ".join(rest).replace("/data/local/tmp", here("/data/local/tmp"))
    sys.exit(subprocess.run(["sh", "-c", line]).returncode)
else:
    sys.exit(print("adb: unknown command %s" % command, file=sys.stderr) or 1)
'''


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """A fake ``adb`` first on PATH; the phone's /data/local/tmp is a folder under tmp_path."""
    bin_dir, phone = tmp_path / "bin", tmp_path / "phone"
    bin_dir.mkdir()
    (phone / "data/local/tmp").mkdir(parents=True)
    adb = bin_dir / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(phone))
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb-calls.jsonl"))

    def calls() -> list[list[str]]:
        log = tmp_path / "adb-calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return phone, calls


def test_adb_push_shell_pull_and_cleanup(fake_adb, tmp_path):
    phone, calls = fake_adb
    (tmp_path / "model.gguf").write_bytes(b"GGUF" + bytes(range(256)))
    with open_device("adb://emulator-5554") as device:
        assert isinstance(device, AdbRunner)
        scratch = device.scratch
        assert scratch.startswith("/data/local/tmp/autocompress-") and (phone / scratch[1:]).is_dir()
        remote = device.put(tmp_path / "model.gguf", "model.gguf")
        done = device.run(["sh", "-c", "wc -c < model.gguf > size.txt; echo ran"])
        assert done.ok and done.stdout == "ran\n"
        assert device.get("size.txt", tmp_path / "size.txt").read_text().strip() == "260"
    assert list((phone / "data/local/tmp").iterdir()) == []  # scratch removed
    made, push, size, run, pull, remove = calls()
    assert all(call[:2] == ["-s", "emulator-5554"] for call in calls())
    assert made[2:] == ["shell", f"mkdir -m 700 {scratch}"]
    assert push[2:] == ["push", str(tmp_path / "model.gguf"), remote]
    assert size[2:] == ["shell", f"wc -c < {remote}"]
    assert (
        run[2] == "shell"
        and run[3].startswith("sh -c ")
        and run[3].endswith(f"sh {scratch} 600 sh -c 'wc -c < model.gguf > size.txt; echo ran'")
    )
    assert pull[2:4] == ["pull", f"{scratch}/size.txt"] and pull[4].startswith(str(tmp_path / ".size.txt.part"))
    assert remove[2:] == ["shell", f"rm -rf {scratch}"]


def test_adb_timeout_is_enforced_on_the_device(fake_adb):
    with open_device("adb://emulator-5554") as device:
        start = time.monotonic()
        with pytest.raises(
            DeviceTimeoutError, match="`sleep 30` did not finish within 1 s and was killed on the device"
        ):
            device.run(["sleep", "30"], timeout=1)
        assert time.monotonic() - start < 6


def test_adb_errors(fake_adb, monkeypatch, caplog):
    phone, calls = fake_adb
    with pytest.raises(
        DeviceUnreachableError,
        match=r"^adb://R58M123: adb cannot reach the device \(adb: device "
        r"'R58M123' not found\); check `adb devices`",
    ):
        with open_device("adb://R58M123"):
            pass
    monkeypatch.setenv("FAKE_ADB_STATE", "unauthorized")
    with pytest.raises(DeviceAuthError, match="accept the USB debugging prompt"):
        with open_device("adb://emulator-5554"):
            pass
    monkeypatch.delenv("FAKE_ADB_STATE")
    monkeypatch.setenv("FAKE_ADB_CLOSE_AT", str(len(calls()) + 2))  # the call after making the scratch folder
    with pytest.raises(DeviceDisconnectedError, match=r"the device went away while `true` ran \(error: closed\)"):
        with open_device("adb://emulator-5554") as device:
            device.run(["true"])
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(DeviceUnreachableError, match="'adb' is not installed here"):
        with open_device("adb://emulator-5554"):
            pass
