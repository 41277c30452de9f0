"""The grading sandbox, tested with real bubblewrap and real subprocesses.

Each test runs a small Python program through the real launcher (`python -m
autograder.sandbox`), lets it report what it could and could not do, and checks from
the host afterwards. Run as root (as in CI) the launcher drops to the sandbox uid; the
non-root test runs the grader itself as an unprivileged user.
"""

import json
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from autograder import sandbox

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
HAVE_BWRAP = shutil.which("bwrap") is not None
needs_bwrap = pytest.mark.skipif(
    not HAVE_BWRAP, reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="switching the grader to an unprivileged user needs root")
GRADER_UID = 1000  # the unprivileged "grader" user of the non-root test

# Shared by every sandboxed program: helpers, and one "RESULT {json}" line at the end.
PRELUDE = r'''
import ctypes, errno, json, os, socket, stat, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
def emit(**values):
    print("RESULT " + json.dumps(values), flush=True)
def try_write(path):
    try:
        with open(path, "w") as handle:
            handle.write("escape")
        return "ok"
    except OSError as error:
        return error.__class__.__name__
def environ():
    raw = open("/proc/self/environ", "rb").read().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if item)
def status():
    lines = open("/proc/self/status").read().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)
'''


@pytest.fixture
def base_dir():
    """A fresh 0755 folder under /tmp (pytest's own tmp dirs are 0700 root)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="sandbox-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def work_dir(base_dir):
    """The sandbox's work dir, with the run/ folder the launcher makes its cwd."""
    work = base_dir / "work"
    (work / "run").mkdir(parents=True)
    work.chmod(0o755)
    return work


def sandbox_env(**extra):
    """A small explicit environment for sandboxed programs."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **extra}


def run_program(code, work, *, isolation="bwrap", env=None, readable=None, hidden=(),
                tmpfs_mb=None, python=None, user=None, cwd=REPO_ROOT,
                launcher_env=None, timeout=60):
    """Runs PRELUDE + code through the launcher; returns (parsed RESULT, CompletedProcess)."""
    python = python or sandbox.interpreter()
    argv = sandbox.launcher_argv(
        [python, "-c", PRELUDE + code], work_dir=work, isolation=isolation,
        env=sandbox_env() if env is None else env,
        readable=sandbox.default_readable() if readable is None else readable,
        hidden=hidden, tmpfs_mb=tmpfs_mb,
    )
    argv[0] = python
    kwargs = {}
    if user is not None:
        kwargs = {"user": user, "group": user, "extra_groups": []}
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=str(cwd),
        env=launcher_env, **kwargs,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, (
        f"sandboxed program failed (rc {result.returncode}):\nstdout: {result.stdout}\n"
        f"stderr: {result.stderr}"
    )
    return json.loads(lines[-1][len("RESULT "):]), result


CORE_ESCAPES = r'''
work = sys.argv[1] if len(sys.argv) > 1 else os.getcwd()
caps = status()
nested = libc.unshare(0x10000000)  # CLONE_NEWUSER
nested_errno = ctypes.get_errno()
try:
    cli = subprocess.run(["unshare", "-U", "true"], capture_output=True).returncode
except OSError:
    cli = None
readable = [p for p in READABLE]
writes = {path: try_write(os.path.join(path, "escape.txt")) for path in readable}
writes["/usr"] = try_write("/usr/escape.txt")
writes["/etc"] = try_write("/etc/escape.txt")
writes["/"] = try_write("/escape.txt")
outside = try_write(os.path.join(os.path.dirname(WORK), "escape.txt"))
inside = try_write(os.path.join(WORK, "written_inside.txt"))
try:
    open("/etc/shadow").read()
    shadow = "read"
except OSError as error:
    shadow = error.__class__.__name__
secret_import = ""
try:
    sys.path.insert(0, LIB)
    import pkg.secret_mod
    secret_import = "imported"
except ImportError as error:
    secret_import = str(error)
import pkg
try:
    secret_text = open(os.path.join(LIB, "pkg", "secret_mod.py")).read()
except OSError as error:
    secret_text = error.__class__.__name__
emit(
    capeff=caps["CapEff"].strip(), capprm=caps["CapPrm"].strip(), capbnd=caps["CapBnd"].strip(),
    nnp=caps["NoNewPrivs"].strip(), uid=os.getuid(), euid=os.geteuid(),
    nested=nested, nested_errno=nested_errno, unshare_cli=cli,
    writes=writes, outside=outside, inside=inside, shadow=shadow, env=environ(),
    repo_visible=[p for p in REPO_PATHS if os.path.exists(p)],
    secret_import=secret_import, secret_text=secret_text, pkg_ok=hasattr(pkg, "PUBLIC"),
    hidden_dir=os.listdir(os.path.join(LIB, "pkg", "solutions")),
)
'''


def make_library(base):
    """A readable folder with a public package, a hidden module and a hidden folder."""
    lib = base / "lib_ro"
    package = lib / "pkg"
    (package / "solutions").mkdir(parents=True)
    (package / "__init__.py").write_text("PUBLIC = True\n")
    (package / "secret_mod.py").write_text("SECRET_TEXT = 'reference solution'\n")
    (package / "solutions" / "answer.txt").write_text("the answer\n")
    for path in [lib, package, package / "solutions"]:
        path.chmod(0o755)
    return lib, [str(package / "secret_mod.py"), str(package / "solutions")]


def core_escape_code(work, lib, readable):
    repo_paths = [str(REPO_ROOT / "autograder" / "checks"), str(REPO_ROOT / "autograder"),
                  str(REPO_ROOT / "pyproject.toml")]
    return (f"WORK = {str(work)!r}\nLIB = {str(lib)!r}\nREADABLE = {readable!r}\n"
            f"REPO_PATHS = {repo_paths!r}\n" + CORE_ESCAPES)


def assert_core_escapes_blocked(result, work, env, readable):
    """The assertions shared by the root and the non-root grader tests."""
    assert result["capeff"] == result["capprm"] == result["capbnd"] == "0000000000000000", result
    assert result["uid"] != 0 and result["euid"] != 0
    assert result["nnp"] == "1"
    assert result["nested"] == -1, "a nested user namespace could be created"
    assert result["unshare_cli"] != 0, "unshare -U worked inside the sandbox"
    for path in readable + ["/usr", "/etc", "/"]:
        assert result["writes"][path] != "ok", f"could write into {path}"
        assert not os.path.exists(os.path.join(path, "escape.txt"))
    # The parent of the work dir is the sandbox's own (tmpfs), never the host's.
    assert not (work.parent / "escape.txt").exists()
    assert result["inside"] == "ok"
    assert (work / "written_inside.txt").read_text() == "escape"
    assert result["shadow"] != "read"
    assert set(result["env"]) - {"PWD"} == set(env), result["env"]
    assert "COURSE_GRADER_SECRET" not in result["env"]
    assert result["repo_visible"] == []
    assert "withheld" in result["secret_import"], result["secret_import"]
    assert "reference solution" not in result["secret_text"]
    assert result["pkg_ok"] is True
    assert result["hidden_dir"] == []


# --------------------------------------------------------------------------- 1, 3, 8


@needs_bwrap
def test_core_escapes_are_blocked(base_dir, work_dir, monkeypatch):
    """No capabilities, no root, no nested userns, read-only paths, exact env, withheld modules."""
    monkeypatch.setenv("COURSE_GRADER_SECRET", "s3cret-token")
    lib, hidden = make_library(base_dir)
    readable = sandbox.default_readable()
    env = sandbox_env(ONLY_THIS="1")
    course_lib_dir = str(REPO_ROOT / "course_lib")
    site_packages = [p for p in readable if "site-packages" in p]
    assert course_lib_dir in readable and site_packages
    code = core_escape_code(work_dir, lib, site_packages + [course_lib_dir, str(lib)])
    result, _ = run_program(code, work_dir, env=env, readable=readable + [str(lib)], hidden=hidden)
    assert_core_escapes_blocked(result, work_dir, env, site_packages + [course_lib_dir, str(lib)])
    if os.geteuid() == 0:
        assert (work_dir / "written_inside.txt").stat().st_uid == sandbox.DEFAULT_SANDBOX_UID
    # The host's copies are untouched.
    assert "reference solution" in (lib / "pkg" / "secret_mod.py").read_text()


# --------------------------------------------------------------------------- 2


@needs_bwrap
def test_file_handles_and_proc_show_only_the_sandbox(work_dir):
    """open_by_handle_at cannot reach host inodes; /proc holds only the sandbox's processes."""
    code = r'''
class Handle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * 128)]
handle = Handle(handle_bytes=128)
mount_id = ctypes.c_int()
named = libc.name_to_handle_at(-100, b"/usr", ctypes.byref(handle), ctypes.byref(mount_id), 0)
mount_fd = os.open("/usr", os.O_RDONLY)
opened = libc.open_by_handle_at(mount_fd, ctypes.byref(handle), os.O_RDONLY)
opened_errno = ctypes.get_errno()
# The "shocker" handle: inode 2 (an ext4 root) with generation 0.
root = Handle(handle_bytes=8, handle_type=1)
root.f_handle[0] = 2
shocker = libc.open_by_handle_at(mount_fd, ctypes.byref(root), os.O_RDONLY)
shocker_errno = ctypes.get_errno()
os.close(mount_fd)
own_root = os.stat("/")
pids = [name for name in os.listdir("/proc") if name.isdigit()]
roots_same = all(
    (os.stat(f"/proc/{pid}/root").st_dev, os.stat(f"/proc/{pid}/root").st_ino)
    == (own_root.st_dev, own_root.st_ino) for pid in pids)
cmdlines = [open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace") for pid in pids]
emit(named=named, opened=opened, opened_errno=opened_errno, shocker=shocker,
     shocker_errno=shocker_errno, pids=pids, roots_same=roots_same, cmdlines=cmdlines,
     root1=sorted(os.listdir("/proc/1/root")), root=sorted(os.listdir("/")),
     fds=sorted(os.listdir("/proc/self/fd")))
'''
    result, _ = run_program(code, work_dir)
    assert result["opened"] == -1 and result["opened_errno"] in (1, 13), result
    assert result["shocker"] == -1 and result["shocker_errno"] in (1, 13), result
    assert result["roots_same"] is True
    assert result["root1"] == result["root"]
    assert result["root"] != sorted(os.listdir("/"))
    assert not {"home", "boot", "var", "srv", "opt"} & set(result["root"]), result["root"]
    assert len(result["pids"]) <= 3, result["cmdlines"]
    assert str(os.getpid()) not in result["pids"] or os.getpid() <= 3
    assert not any("pytest" in line for line in result["cmdlines"])
    # No descriptor of the grader (or of the staging) leaked in: 0-2 and listdir's own.
    assert len(result["fds"]) <= 4, result["fds"]


# --------------------------------------------------------------------------- 3


@needs_bwrap
def test_read_only_binds_cannot_be_remounted(work_dir):
    """mount(MS_REMOUNT) of a read-only bind fails; it stays read-only."""
    site_packages = [p for p in sandbox.default_readable() if "site-packages" in p][0]
    code = f"SITE = {site_packages!r}\n" + r'''
MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
results = {}
for path in ["/usr", SITE, "/"]:
    rc = libc.mount(None, path.encode(), None, ctypes.c_ulong(MS_REMOUNT | MS_BIND), None)
    results[path] = [rc, ctypes.get_errno(), try_write(os.path.join(path, "after.txt"))]
emit(results=results)
'''
    result, _ = run_program(code, work_dir)
    for path, (rc, error, write) in result["results"].items():
        assert rc == -1 and error == 1, f"remount of {path}: rc {rc}, errno {error}"
        assert write != "ok"
    assert not pathlib.Path(site_packages, "after.txt").exists()


# --------------------------------------------------------------------------- 4


@needs_bwrap
def test_dev_is_minimal_and_mknod_fails(work_dir):
    """/dev holds only the harmless character devices; mknod is refused."""
    code = r'''
entries = {}
for folder, dirs, files in os.walk("/dev"):
    for name in dirs + files:
        path = os.path.join(folder, name)
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        entries[path] = "blk" if stat.S_ISBLK(mode) else "chr" if stat.S_ISCHR(mode) else "other"
made = {}
for kind, device in [("chr", os.makedev(1, 3)), ("blk", os.makedev(253, 0))]:
    flag = stat.S_IFCHR if kind == "chr" else stat.S_IFBLK
    try:
        os.mknod(os.path.join(os.getcwd(), "node_" + kind), flag | 0o600, device)
        made[kind] = "ok"
    except OSError as error:
        made[kind] = error.__class__.__name__
emit(entries=entries, made=made)
'''
    result, _ = run_program(code, work_dir)
    entries = result["entries"]
    assert "blk" not in entries.values(), entries
    for banned in ["/dev/sda", "/dev/vda", "/dev/nvme0", "/dev/mem", "/dev/kmem", "/dev/kmsg",
                   "/dev/port", "/dev/fuse", "/dev/loop0", "/dev/nvidia0", "/dev/kvm"]:
        assert banned not in entries
    devices = {path for path, kind in entries.items() if kind == "chr"}
    allowed = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
               "/dev/tty", "/dev/ptmx", "/dev/pts/ptmx"}
    assert devices <= allowed, devices - allowed
    assert result["made"] == {"chr": "PermissionError", "blk": "PermissionError"}


# --------------------------------------------------------------------------- 5


@needs_bwrap
def test_setuid_binaries_do_not_raise_privileges(work_dir):
    """An existing setuid-root binary runs with the sandbox uid (no_new_privs, nosuid)."""
    setuid = [p for p in ["/usr/bin/su", "/bin/su", "/usr/bin/passwd", "/usr/bin/mount"]
              if os.path.exists(p) and os.stat(p).st_mode & stat.S_ISUID and os.stat(p).st_uid == 0]
    if not setuid:
        pytest.skip("no setuid-root binary (su, passwd, mount) on this machine to try")
    code = f"BINARY = {setuid[0]!r}\n" + r'''
process = subprocess.Popen([BINARY, "root", "-c", "id"] if BINARY.endswith("su") else [BINARY],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
seen = []
for _ in range(30):
    try:
        line = [l for l in open(f"/proc/{process.pid}/status").read().splitlines()
                if l.startswith("Uid:")][0]
        seen.append([int(v) for v in line.split()[1:]])
    except (OSError, IndexError):
        pass
    if process.poll() is not None:
        break
    time.sleep(0.05)
process.kill()
process.wait()
emit(seen=seen, nnp=status()["NoNewPrivs"].strip(),
     nosuid=all("nosuid" in line.split()[5] for line in open("/proc/self/mountinfo")
                if line.split()[4] == "/usr"))
'''
    result, _ = run_program(code, work_dir)
    assert result["seen"], "the setuid binary's status could not be observed"
    for uids in result["seen"]:
        assert 0 not in uids, f"a setuid binary gained uid 0: {uids}"
    assert result["nnp"] == "1"
    assert result["nosuid"] is True


# --------------------------------------------------------------------------- 6


@needs_bwrap
def test_no_network(work_dir):
    """Only lo exists, and a port listening on the host's 127.0.0.1 cannot be reached."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    code = f"PORT = {port}\n" + r'''
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=3).close()
    connect = "connected"
except OSError as error:
    connect = error.__class__.__name__
emit(connect=connect, interfaces=[name for _, name in socket.if_nameindex()])
'''
    try:
        result, _ = run_program(code, work_dir)
    finally:
        listener.close()
    assert result["connect"] != "connected"
    assert result["interfaces"] == ["lo"]


# --------------------------------------------------------------------------- 7


@needs_bwrap
def test_tmp_and_shm_are_private(work_dir):
    """A file one sandbox writes in /tmp or /dev/shm is gone for the next one and the host."""
    marker = f"marker-{os.getpid()}-{time.time_ns()}"
    write = f"NAME = {marker!r}\n" + r'''
emit(tmp=try_write("/tmp/" + NAME), shm=try_write("/dev/shm/" + NAME))
'''
    check = f"NAME = {marker!r}\n" + r'''
emit(tmp=os.path.exists("/tmp/" + NAME), shm=os.path.exists("/dev/shm/" + NAME),
     shm_fs=[l.split()[0] for l in open("/proc/self/mounts") if l.split()[1] == "/dev/shm"])
'''
    first, _ = run_program(write, work_dir)
    assert first == {"tmp": "ok", "shm": "ok"}
    second, _ = run_program(check, work_dir)
    assert second["tmp"] is False and second["shm"] is False
    assert second["shm_fs"] == ["tmpfs"]
    assert not os.path.exists("/tmp/" + marker) and not os.path.exists("/dev/shm/" + marker)


@needs_bwrap
def test_shm_usage_counts_towards_tree_memory(work_dir):
    """300 MB written into the sandbox's /dev/shm show up in tree_memory_mb of the launcher."""
    code = PRELUDE + r'''
chunk = b"x" * (1 << 20)
with open("/dev/shm/fill", "wb") as handle:
    for _ in range(300):
        handle.write(chunk)
print("ready", flush=True)
time.sleep(60)
'''
    argv = sandbox.launcher_argv([sandbox.interpreter(), "-c", code], work_dir=work_dir, isolation="bwrap",
                                 env=sandbox_env(), readable=sandbox.default_readable(), tmpfs_mb=512)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=str(REPO_ROOT))
    try:
        line = process.stdout.readline()
        assert line.strip() == "ready", process.stderr.read() if process.poll() is not None else line
        used = sandbox.tree_memory_mb(process.pid)
    finally:
        sandbox.kill_tree(process.pid)
        sandbox.reap(process.pid)
        process.communicate(timeout=10)
    assert used >= 300, f"tree_memory_mb saw only {used:.0f} MiB"
    assert used < 1000, f"tree_memory_mb counted {used:.0f} MiB (a tmpfs counted twice?)"
    assert sandbox.tree_memory_mb(process.pid) == 0.0  # gone: no error, nothing counted


# --------------------------------------------------------------------------- 9


@pytest.fixture
def fresh_isolation_cache():
    sandbox._reset_isolation_cache()
    yield
    sandbox._reset_isolation_cache()


def fake_bwrap_path(base, monkeypatch):
    fake_bin = base / "fakebin"
    fake_bin.mkdir()
    fake = fake_bin / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ.get('PATH', '')}")


def test_isolation_none_gives_process(monkeypatch, fresh_isolation_cache):
    monkeypatch.setenv(sandbox.ISOLATION_ENV_VAR, "none")
    assert sandbox.isolation_mode() == "process"


def test_isolation_auto_falls_back_with_a_warning(base_dir, monkeypatch, capsys, fresh_isolation_cache):
    fake_bwrap_path(base_dir, monkeypatch)
    monkeypatch.setenv(sandbox.ISOLATION_ENV_VAR, "auto")
    assert sandbox.isolation_mode() == "process"
    warning = capsys.readouterr().err
    assert "WITHOUT bubblewrap" in warning and "uid map: Permission denied" in warning
    assert sandbox.isolation_mode() == "process"  # cached: no second preflight, no second warning
    assert capsys.readouterr().err == ""


def test_isolation_bwrap_that_does_not_work_raises(base_dir, monkeypatch, fresh_isolation_cache):
    fake_bwrap_path(base_dir, monkeypatch)
    monkeypatch.setenv(sandbox.ISOLATION_ENV_VAR, "bwrap")
    with pytest.raises(sandbox.SandboxError) as caught:
        sandbox.isolation_mode()
    message = str(caught.value)
    assert "apt-get install bubblewrap" in message
    assert "user.max_user_namespaces" in message and "seccomp=unconfined" in message
    assert "COURSE_GRADER_ISOLATION=none" in message
    assert "uid map: Permission denied" in message


def test_isolation_unknown_value_raises(monkeypatch, fresh_isolation_cache):
    monkeypatch.setenv(sandbox.ISOLATION_ENV_VAR, "chroot-please")
    with pytest.raises(sandbox.SandboxError, match="chroot-please"):
        sandbox.isolation_mode()


@needs_bwrap
def test_isolation_bwrap_works_here(monkeypatch, fresh_isolation_cache):
    """The preflight with the real policy passes where bubblewrap is installed and usable."""
    monkeypatch.setenv(sandbox.ISOLATION_ENV_VAR, "bwrap")
    assert sandbox.isolation_mode() == "bwrap"


# --------------------------------------------------------------------------- 10


def python_for(uid):
    """An interpreter that `uid` can run, with its prefixes; None if there is none."""
    probe = "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix]))"
    for candidate in [sandbox.interpreter(), "/usr/bin/python3", shutil.which("python3")]:
        if not candidate:
            continue
        try:
            result = subprocess.run([candidate, "-I", "-c", probe], capture_output=True, text=True,
                                    user=uid, group=uid, extra_groups=[], timeout=30, cwd="/")
        except OSError:
            continue
        if result.returncode == 0:
            return candidate, json.loads(result.stdout)
    return None


@needs_bwrap
@needs_root
def test_core_escapes_are_blocked_for_an_unprivileged_grader(base_dir, monkeypatch):
    """The same escapes fail when the grader (launcher) itself runs as an ordinary user."""
    found = python_for(GRADER_UID)
    if found is None:
        pytest.skip(f"no Python interpreter that uid {GRADER_UID} can run here "
                    f"({sys.executable} lies under a folder it cannot enter)")
    python, prefixes = found
    # The launcher from a copy the grader user can read (the repository may be private).
    package = base_dir / "pkg" / "autograder"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in ["sandbox.py", "withheld_module.py"]:
        shutil.copy(REPO_ROOT / "autograder" / name, package / name)
    lib, hidden = make_library(base_dir)
    work = base_dir / "work"
    (work / "run").mkdir(parents=True)
    for folder, dirs, files in os.walk(base_dir):
        os.chown(folder, 0, 0)
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    for folder, dirs, files in os.walk(work):
        os.chown(folder, GRADER_UID, GRADER_UID)
    readable = sorted({os.path.realpath(p) for p in prefixes} | {str(lib)})
    env = sandbox_env(ONLY_THIS="1")
    launcher_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "COURSE_GRADER_SECRET": "s3cret"}
    code = core_escape_code(work, lib, [str(lib)])
    result, _ = run_program(code, work, env=env, readable=readable, hidden=hidden, python=python,
                            user=GRADER_UID, cwd=base_dir / "pkg", launcher_env=launcher_env)
    assert_core_escapes_blocked(result, work, env, [str(lib)])
    assert (work / "written_inside.txt").stat().st_uid == GRADER_UID


# --------------------------------------------------------------------------- 11


def test_process_mode_env_and_limits(work_dir, monkeypatch):
    """Without bwrap the program still gets exactly `env`, a new session and the rlimits."""
    monkeypatch.setenv("COURSE_GRADER_SECRET", "s3cret-token")
    code = r'''
import resource
emit(env=environ(), fsize=list(resource.getrlimit(resource.RLIMIT_FSIZE)),
     core=list(resource.getrlimit(resource.RLIMIT_CORE)), leader=os.getsid(0) == os.getpid(),
     cwd=os.getcwd())
'''
    env = sandbox_env(ONLY_THIS="1")
    result, _ = run_program(code, work_dir, isolation="process", env=env)
    assert result["env"] == env
    assert result["fsize"] == [sandbox.MAX_FILE_BYTES, sandbox.MAX_FILE_BYTES]
    assert result["core"] == [0, 0]
    assert result["leader"] is True


def test_launcher_argv_shape(work_dir):
    """The documented argv, the jupyter placeholder untouched; bad arguments are explained."""
    argv = sandbox.launcher_argv(["python", "-f", "{connection_file}"], work_dir=work_dir,
                                 isolation="bwrap", env={"A": "1"}, readable=["/data"],
                                 hidden=["/data/x.py"], tmpfs_mb=256)
    assert argv == [sys.executable, "-m", "autograder.sandbox", "--work-dir", str(work_dir),
                    "--isolation", "bwrap", "--env-json", '{"A": "1"}', "--read", "/data",
                    "--hide", "/data/x.py", "--tmpfs-mb", "256", "--", "python", "-f",
                    "{connection_file}"]
    with pytest.raises(ValueError, match="'jail'"):
        sandbox.launcher_argv(["python"], work_dir=work_dir, isolation="jail", env={})
    readable = sandbox.default_readable()
    assert str(REPO_ROOT / "course_lib") in readable
    assert str(REPO_ROOT) not in readable and str(REPO_ROOT / "autograder") not in readable


# --------------------------------------------------------------------------- kernel


@needs_bwrap
def test_ipykernel_starts_in_the_sandbox(work_dir):
    """A real IPython kernel starts through the launcher and reads its 0600 connection file."""
    jupyter_client = pytest.importorskip("jupyter_client")
    from jupyter_client.kernelspec import KernelSpecManager

    (work_dir / "ipc").mkdir()
    env = sandbox_env(HOME=str(work_dir / "run"), MPLBACKEND="Agg", PYTHONNOUSERSITE="1")
    argv = sandbox.launcher_argv(
        [sandbox.interpreter(), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        work_dir=work_dir, isolation="bwrap", env=env, readable=sandbox.default_readable(),
    )
    spec_dir = work_dir.parent / "kernels" / "sandboxed"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps(
        {"argv": argv, "display_name": "sandboxed", "language": "python", "interrupt_mode": "message"}))
    spec_manager = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)])
    spec_manager.ensure_native_kernel = False
    manager = jupyter_client.KernelManager(kernel_name="sandboxed", kernel_spec_manager=spec_manager)
    manager.transport = "ipc"
    manager.ip = str(work_dir / "ipc" / "kernel")
    manager.connection_file = str(work_dir / "ipc" / "connection.json")
    outputs = []
    manager.start_kernel(cwd=str(REPO_ROOT))
    client = manager.client()
    try:
        client.start_channels()
        client.wait_for_ready(timeout=60)
        client.execute_interactive(
            "import os; print(os.getuid(), os.getcwd(), 'COURSE_GRADER_SECRET' in os.environ)",
            timeout=30, output_hook=lambda msg: outputs.append(msg["content"].get("text", "")),
        )
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    uid, cwd, secret = "".join(outputs).split()
    assert uid != "0" and cwd == str(work_dir / "run") and secret == "False"
