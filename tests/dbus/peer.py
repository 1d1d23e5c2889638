#!/usr/bin/python3
"""A D-Bus peer for the tests, on the session bus of $DBUS_SESSION_BUS_ADDRESS.

  peer.py serve NAME LOG   owns NAME, answers org.freedesktop.Notifications calls on
                           /org/freedesktop/Notifications and, as a portal backend,
                           org.freedesktop.impl.portal.Notification calls on
                           /org/freedesktop/portal/desktop; appends each call's member and
                           sender (for the backend: the app id the portal names) to LOG;
                           runs until killed.
  peer.py own NAME SECS    asks for NAME (no queueing), prints the reply code or the
                           error name, holds the name SECS seconds; exit 0 only if owned.
"""
import sys

from gi.repository import Gio, GLib

IFACE = """
<node>
  <interface name="org.freedesktop.Notifications">
    <method name="GetServerInformation">
      <arg type="s" direction="out"/><arg type="s" direction="out"/>
      <arg type="s" direction="out"/><arg type="s" direction="out"/>
    </method>
    <method name="Notify">
      <arg type="s" direction="in"/><arg type="u" direction="in"/>
      <arg type="s" direction="in"/><arg type="s" direction="in"/>
      <arg type="s" direction="in"/><arg type="as" direction="in"/>
      <arg type="a{sv}" direction="in"/><arg type="i" direction="in"/>
      <arg type="u" direction="out"/>
    </method>
  </interface>
  <interface name="org.freedesktop.impl.portal.Notification">
    <method name="AddNotification">
      <arg type="s" direction="in"/><arg type="s" direction="in"/>
      <arg type="a{sv}" direction="in"/>
    </method>
    <method name="RemoveNotification">
      <arg type="s" direction="in"/><arg type="s" direction="in"/>
    </method>
  </interface>
</node>
"""


def serve(name, log):
    bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
    node = Gio.DBusNodeInfo.new_for_xml(IFACE)

    def call(conn, sender, path, iface, member, params, invocation):
        who = f"app_id={params.unpack()[0]}" if iface.startswith("org.freedesktop.impl") else sender
        with open(log, "a") as f:
            f.write(f"{member} {who}\n")
        if iface.startswith("org.freedesktop.impl"):
            invocation.return_value(None)
        elif member == "GetServerInformation":
            invocation.return_value(GLib.Variant("(ssss)", ("sandboxd-test", "e2e", "1", "1.2")))
        else:
            invocation.return_value(GLib.Variant("(u)", (7,)))

    bus.register_object("/org/freedesktop/Notifications", node.interfaces[0], call, None, None)
    bus.register_object("/org/freedesktop/portal/desktop", node.interfaces[1], call, None, None)
    reply = bus.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                          "RequestName", GLib.Variant("(su)", (name, 4)), None, 0, 5000, None)
    if reply.unpack()[0] != 1:
        sys.exit(f"cannot own {name}")
    with open(log, "a") as f:
        f.write("ready\n")
    GLib.MainLoop().run()


def own(name, secs):
    bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
    try:
        reply = bus.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus",
                              "org.freedesktop.DBus", "RequestName",
                              GLib.Variant("(su)", (name, 4)), None, 0, 5000, None)
    except GLib.Error as e:
        print(Gio.DBusError.get_remote_error(e) or e.message, flush=True)
        sys.exit(1)
    code = reply.unpack()[0]
    print(code, flush=True)
    loop = GLib.MainLoop()
    GLib.timeout_add(int(float(secs) * 1000), loop.quit)
    loop.run()
    sys.exit(0 if code == 1 else 1)


if __name__ == "__main__":
    {"serve": serve, "own": own}[sys.argv[1]](*sys.argv[2:4])
