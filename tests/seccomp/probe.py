# Run inside a sandbox by tests/e2e_seccomp.rs: tries each closed kernel interface with
# arguments that would make the kernel itself answer differently (EFAULT, EBADF or success)
# without the filter, and prints "LABEL RESULT" per line (RESULT: an errno name or "ok").
import ctypes, errno, os, socket, subprocess, sys, threading

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long


def show(label, result):
    print(label, result, flush=True)


def raw(label, nr, *args):
    r = libc.syscall(L(nr), *[L(a) for a in args])
    if r == -1:
        show(label, errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()))
    else:
        show(label, "ok")
    return r


def attempt(label, op):
    try:
        op()
        show(label, "ok")
    except OSError as e:
        show(label, errno.errorcode.get(e.errno, e.errno))


CLONE_NEWUSER, SIGCHLD = 0x10000000, 17
which = sys.argv[1] if len(sys.argv) > 1 else "closed"

if which == "closed":
    raw("unshare-user", 272, CLONE_NEWUSER)
    # A raw clone like fork: a child that gets here leaves at once.
    r = raw("clone-user", 56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
    if r == 0:
        os._exit(0)
    elif r > 0:
        os.waitpid(r, 0)
    raw("clone3", 435, 1, 88)
    raw("setns", 308, -1, 0)
    raw("mount", 165, 1, 1, 1, 0, 0)
    raw("open_tree", 428, -1, 1, 0)
    raw("fsopen", 430, 1, 0)
    raw("keyctl", 250, 0, -3, 0)  # KEYCTL_GET_KEYRING_ID of the session keyring
    raw("add_key", 248, 1, 1, 0, 0, 0)
    raw("bpf", 321, 0, 1, 72)
    raw("perf_event_open", 298, 1, 0, -1, -1, 0)
    raw("userfaultfd", 323, 1)  # UFFD_USER_MODE_ONLY
    raw("io_uring_setup", 425, 1, 1)
    raw("open_by_handle_at", 304, -1, 1, 0)
    raw("personality-addr-no-randomize", 135, 0x0040000)
    raw("personality-query", 135, 0xFFFFFFFF)
    raw("socket-vsock", 41, 40, socket.SOCK_STREAM, 0)
    raw("socket-alg", 41, 38, socket.SOCK_SEQPACKET, 0)
    raw("socket-packet", 41, 17, socket.SOCK_DGRAM, 0)
    raw("socket-netfilter", 41, 16, socket.SOCK_RAW, 12)
    raw("socket-netfilter-high", 41, 16, socket.SOCK_RAW, (1 << 32) | 12)
    raw("socket-vsock-high", 41, (1 << 32) | 40, socket.SOCK_STREAM, 0)
    raw("ioctl-tiocsti", 16, -1, 0x5412, 1)
    raw("ioctl-tiocsti-high", 16, -1, (0x123 << 32) | 0x5412, 1)
    raw("ioctl-tioclinux", 16, -1, 0x541C, 1)
    raw("ioctl-tiocgwinsz-badfd", 16, -1, 0x5413, 1)
    out = subprocess.run(["unshare", "-Ur", "true"], capture_output=True, text=True)
    show("unshare-Ur", out.returncode)
    show("unshare-Ur-says", "Operation-not-permitted" if "Operation not permitted" in out.stderr else repr(out.stderr))
    attempt("write-max-userns", lambda: open("/proc/sys/user/max_user_namespaces", "w").write("100"))
    show("max-userns", open("/proc/sys/user/max_user_namespaces").read().strip())
    for who in ["self", "1"]:
        status = dict(l.split(":\t", 1) for l in open(f"/proc/{who}/status").read().splitlines() if ":\t" in l)
        show(f"seccomp-{who}", status["Seccomp"].strip())

elif which == "works":
    # fork, subprocess (clone3 falls back to clone), threads.
    show("subprocess", subprocess.run(["true"]).returncode)
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    show("fork", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    got = []
    ts = [threading.Thread(target=lambda i=i: got.append(i)) for i in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    show("threads", len(got))
    # AF_UNIX: a socketpair and a bound listener.
    a, b = socket.socketpair()
    a.sendall(b"x")
    show("socketpair", b.recv(1).decode())
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.bind(f"/tmp/probe-{os.getpid()}.sock")
    u.listen(1)
    show("unix-listen", "ok")
    # NETLINK_ROUTE, as `ip addr` uses it.
    ip = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True)
    show("ip-addr", "ok" if ip.returncode == 0 and " lo " in ip.stdout else repr(ip.stderr))
    # TIOCGWINSZ on a pty of the sandbox's own devpts.
    import fcntl, pty, struct, termios
    m, s = pty.openpty()
    fcntl.ioctl(m, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 99, 0, 0))
    rows, cols = struct.unpack("HHHH", fcntl.ioctl(s, termios.TIOCGWINSZ, b"\0" * 8))[:2]
    show("tiocgwinsz", f"{rows}x{cols}")
    # A Go program (runc, from the host's /usr).
    go = subprocess.run(["runc", "--version"], capture_output=True, text=True)
    show("go", "ok" if go.returncode == 0 and "runc version" in go.stdout else repr(go.stderr))
    # ptrace of a child.
    st = subprocess.run(["strace", "-f", "-o", "/dev/null", "true"], capture_output=True, text=True)
    show("strace", st.returncode if st.returncode == 0 else repr(st.stderr))
    raw("personality-linux", 135, 0)
