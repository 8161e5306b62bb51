"""Host resources a bed's dockerd needs outside its base dir: a bridge, an address pool, mounts.

Why a bridge of our own: a second dockerd on a host where another one already runs must not
touch `docker0`. Left to its defaults it would share (and reconfigure) the other daemon's
docker0; with `--bridge=none` dockerd 20.10 *deletes* any existing docker0 at start-up
(`removeDefaultBridgeInterface`), breaking the other daemon. So each bed creates its own bridge
`ue-n<N>` with 10.<N>.0.1/24 and gives dockerd `--bridge=ue-n<N>` plus the address pool
10.<N>.0.0/16 for the networks compose creates. Creating the link is atomic, so the link name
doubles as a lock on <N> between beds running in parallel.
"""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Second octets tried for 10.<N>.0.0/16; far from what common tools default to (10.0.x, 10.1.x).
_POOL_OCTETS = range(100, 250)


@dataclass(frozen=True)
class BridgeLease:
    """A bridge created for one bed and the address pool that goes with it."""

    name: str  # ue-n<N>, at most 15 chars (IFNAMSIZ)
    gateway: ipaddress.IPv4Interface  # 10.N.0.1/24, the default bridge network of the bed
    pool: ipaddress.IPv4Network  # 10.N.0.0/16, --default-address-pool base (size 24)


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def host_routes() -> list[ipaddress.IPv4Network]:
    """IPv4 destinations of the host's routing table (main table, from /proc/net/route)."""
    nets = []
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        dest = socket.inet_ntoa(struct.pack("<I", int(fields[1], 16)))
        mask = socket.inet_ntoa(struct.pack("<I", int(fields[7], 16)))
        nets.append(ipaddress.IPv4Network(f"{dest}/{mask}", strict=False))
    return nets


def reserve_bridge() -> BridgeLease:
    """Create a fresh bridge on an unused 10.<N>.0.0/16 and return its lease."""
    octets = list(_POOL_OCTETS)
    random.shuffle(octets)  # parallel beds rarely collide on the first try
    for octet in octets:
        pool = ipaddress.IPv4Network(f"10.{octet}.0.0/16")
        # The default route (0.0.0.0/0) overlaps everything: only look at specific routes.
        if any(net.prefixlen > 0 and net.overlaps(pool) for net in host_routes()):
            continue
        name = f"ue-n{octet}"
        created = _ip("link", "add", "name", name, "type", "bridge")
        if created.returncode != 0:
            if "exists" in created.stderr:
                continue  # another bed holds this one
            raise OSError(f"ip link add {name}: {created.stderr.strip()}")
        gateway = ipaddress.IPv4Interface(f"10.{octet}.0.1/24")
        for args in (("addr", "add", str(gateway), "dev", name), ("link", "set", name, "up")):
            done = _ip(*args)
            if done.returncode != 0:
                _ip("link", "del", name)
                raise OSError(f"ip {' '.join(args)}: {done.stderr.strip()}")
        return BridgeLease(name=name, gateway=gateway, pool=pool)
    raise OSError("no free 10.<N>.0.0/16 address pool left for a test bed bridge")


def delete_bridges_in(pool: ipaddress.IPv4Network) -> list[str]:
    """Delete every bridge with an address inside `pool`: the bed's own and compose's.

    dockerd does not remove the `br-<id>` bridges of user-defined networks when it stops, and
    after a crash nobody knows their ids: their addresses (all from the bed's pool) do.
    Returns error messages (empty when all went well).
    """
    listing = _ip("-j", "-4", "addr", "show", "type", "bridge")
    if listing.returncode != 0:
        return [f"ip addr show: {listing.stderr.strip()}"]
    errors = []
    for link in json.loads(listing.stdout or "[]"):
        addrs = [ipaddress.IPv4Address(a["local"]) for a in link.get("addr_info", [])]
        if any(a in pool for a in addrs):
            done = _ip("link", "del", link["ifname"])
            if done.returncode != 0 and "Cannot find device" not in done.stderr:
                errors.append(f"ip link del {link['ifname']}: {done.stderr.strip()}")
    return errors


def delete_link(name: str) -> None:
    """Delete a link by name if it exists (a bridge with no address left behind)."""
    _ip("link", "del", name)


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and path[i + 1 : i + 4].isdigit():
            out.append(chr(int(path[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def mounts_under(base: Path) -> list[str]:
    """Mount points at or below `base`, deepest first (the order to unmount them in)."""
    prefix = str(base).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point.startswith(prefix) or point == prefix.rstrip("/"):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_all(base: Path) -> list[str]:
    """Unmount what dockerd/containerd left under `base` (overlays, netns, shm); lazily if busy.

    Returns the mount points that are still mounted afterwards.
    """
    for point in mounts_under(base):
        done = subprocess.run(["umount", point], capture_output=True, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return mounts_under(base)
