"""Times D-Bus calls to the daemon while something else happens: `busctl call
ListSandboxes` every 100 ms for SECONDS, then prints "MAX_MS CALLS". Run as the session's
user."""
import subprocess, sys, time

seconds = float(sys.argv[1])
worst, calls = 0.0, 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    t = time.monotonic()
    subprocess.run(["busctl", "--user", "call", "org.sandboxd.Sandboxd1", "/org/sandboxd/Sandboxd1",
                    "org.sandboxd.Sandboxd1.Manager", "ListSandboxes"], check=True,
                   capture_output=True, timeout=10)
    worst = max(worst, (time.monotonic() - t) * 1000)
    calls += 1
    time.sleep(0.1)
print("%.0f %d" % (worst, calls))
