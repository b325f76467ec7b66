# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Install the zfs.replication engine package from the bundle on stdin, in one step on the host.

Usage: python3 -I install_engine.py PACKAGE_DIR [--check] < bundle.json   (bundle: {"file name": "source", ...})

Writes each file whose content, mode or owner differs (a temporary file renamed over it, so a timer run never
imports half a file), owned by the user it runs as: root under the role, as the timers that run this code. Removes
the engine files (_*.py) the bundle no longer has and prints {"changed": [...]} as JSON. --check only reports.
The role runs it with the bundle built on the controller, so an unchanged engine costs one module call per host
instead of one per file.
"""

import json
import os
import stat
import sys
import tempfile


def owned(path, mode):
    """PATH has MODE and belongs to the user and group this runs as."""
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode) == mode and (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())


def same(path, data):
    try:
        with open(path, "rb") as handle:
            if handle.read() != data:
                return False
        return owned(path, 0o644)
    except OSError:
        return False


def write(path, data):
    fd, tmp = tempfile.mkstemp(prefix=".install-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chown(tmp, os.geteuid(), os.getegid())  # not the directory's group (setgid)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv):
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] != "--check"):
        sys.exit("usage: install_engine.py PACKAGE_DIR [--check] < bundle.json")
    dest, check = argv[1], len(argv) == 3
    files = json.load(sys.stdin)
    bad = [n for n in files if os.path.basename(n) != n or not n.endswith(".py")]
    if bad or not files:
        sys.exit(f"install_engine.py: the bundle must name plain .py files, got {sorted(bad) or 'none'}")
    os.umask(0o022)
    changed = []
    if not os.path.isdir(dest):
        changed.append(dest)
        if check:
            print(json.dumps({"changed": changed + sorted(files)}))
            return
        os.makedirs(dest, mode=0o755)
    elif not owned(dest, 0o755):
        changed.append(dest)
        if not check:
            os.chown(dest, os.geteuid(), os.getegid())
            os.chmod(dest, 0o755)
    for name in sorted(files):
        data = files[name].encode("utf-8")
        path = os.path.join(dest, name)
        if not same(path, data):
            changed.append(name)
            if not check:
                write(path, data)
    for name in sorted(os.listdir(dest)):
        if name.startswith("_") and name.endswith(".py") and name not in files:
            changed.append(f"{name} (removed)")
            if not check:
                os.unlink(os.path.join(dest, name))
    print(json.dumps({"changed": changed}))


if __name__ == "__main__":
    main(sys.argv)
