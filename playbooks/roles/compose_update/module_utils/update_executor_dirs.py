# -*- coding: utf-8 -*-
"""Who may own the directory the lock and the rollback point are written in.

The rollback point chooses the compose files a start-up rollback runs, so the directory must be
out of reach of other users: it belongs to the running user or root, or (checked by root) to a
member of the docker group, who already controls the host through the daemon. The last case is
root's `update-executor rollback` or a manual run on the unit's StateDirectory, which belongs to
the service user. No group or other user may write into it. Shared by update_lock and
compose_snapshot.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat

DOCKER_GROUP = "docker"


def docker_group_uids(group=DOCKER_GROUP):
    """The uids of the docker group's members (listed, or with it as their primary group)."""
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return set()
    uids = {user.pw_uid for user in pwd.getpwall() if user.pw_gid == entry.gr_gid}
    for name in entry.gr_mem:
        try:
            uids.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            continue
    return uids


def trusted_owner(owner, uid, root_equivalent=None):
    """Whether files a process of `uid` writes may sit in a directory of `owner`."""
    if owner in (uid, 0):
        return True
    if uid != 0:
        return False
    return owner in (docker_group_uids() if root_equivalent is None else root_equivalent)


def check_directory(directory, uid=None, what="directory", root_equivalent=None):
    """Raise PermissionError for a directory someone else could plant files in."""
    uid = os.geteuid() if uid is None else uid
    info = os.stat(directory)
    if not trusted_owner(info.st_uid, uid, root_equivalent):
        raise PermissionError(errno.EPERM, "the %s belongs to uid %d, not to this user (uid %d), root or "
                              "(for root) a member of the docker group: refused, another user could plant "
                              "a rollback point in it" % (what, info.st_uid, uid), directory)
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(errno.EPERM, "the %s is writable by its group or others (mode %04o): refused, "
                              "make it 0700" % (what, stat.S_IMODE(info.st_mode)), directory)
