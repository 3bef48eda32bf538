"""lossyfs: a FUSE file system that keeps everything not yet synced in memory and loses it when
the power is cut (its process is killed), in the way LazyFS or SQLite's crash VFS do.

Run as `python3 lossyfs.py BACKING MOUNTPOINT` (foreground, single-threaded); tests use
`LossyMount` (lossy_mount.py). "Cutting the power" is SIGKILL of this process: what it held in memory is gone,
and the next mount on the same BACKING sees only what was made durable.

Durability model (conservative POSIX; stricter than ext4's ordered journal, on purpose):
  * File data and size become durable only by fsync/fdatasync of that file (any descriptor of
    the inode). sync_file_range(2) and syncfs(2) never reach a FUSE file system, so they make
    nothing durable here, as they promise nothing about metadata or the disk cache.
  * A directory entry (create, mknod, mkdir, link, rename's new and old names, unlink, rmdir)
    becomes durable only by fsync of THAT directory. fsync of a file does not make its name
    durable; fsync of a directory does not make its own name in its parent durable.
    A rename across directories made durable in the target only leaves the old name in
    place too (two names for one file after the crash).
  * A file whose name is durable but whose data never was is empty after the crash.
  * Modes of durable names are the modes at the time the entry was made durable; times are
    not kept. Unmounting cleanly also drops what was not synced.

On disk (BACKING): `journal`, one JSON line per durable entry change, appended at each
directory fsync, and `f<inode>`, the durable content of each file. Nothing is ever written to
BACKING except by an fsync, so killing this process at any instant leaves exactly the state of
the last completed syncs (a sync cut off half way is partly applied, as on a real disk).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import time

PAGE = 4096
INF = 1 << 62


class Node:
    __slots__ = ("id", "kind", "mode", "entries", "changed", "size", "dirty", "zero_from", "dsize",
                 "nlink", "target", "mtime", "uid", "gid")

    def __init__(self, ino: int, kind: int, mode: int, target: str = ""):
        self.id, self.kind, self.mode, self.target = ino, kind, mode & 0o7777, target
        self.entries: dict[str, int] = {}  # directories: the visible entries
        self.changed: set[str] = set()  # directories: names changed since the last fsync
        self.size = 0  # visible size
        self.dirty: dict[int, bytearray] = {}  # page number -> visible bytes of a written page
        self.zero_from = INF  # durable bytes at and past this offset read as zeros (truncated)
        self.dsize = 0  # durable size (of the f<inode> file)
        self.nlink = 0
        self.mtime = time.time_ns()
        self.uid = self.gid = 0


class LossyFs:
    use_ns = True

    def __init__(self, backing: str):
        self.backing = backing
        self.nodes: dict[int, Node] = {}
        self.durable: dict[int, dict[str, int]] = {}  # directory inode -> durable entries
        self.meta: dict[int, tuple[int, int, str]] = {0: (stat.S_IFDIR, 0o755, "")}
        self.fds: dict[int, int] = {}  # inode -> descriptor of its f<inode>
        self.handles: dict[int, int] = {}  # open file handle -> inode
        self.next_fh = 1
        self._load()
        self.journal = os.open(os.path.join(backing, "journal"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    # --- durable state ----------------------------------------------------------------------

    def _load(self) -> None:
        top = 0
        self.durable[0] = {}
        path = os.path.join(self.backing, "journal")
        if os.path.exists(path):
            with open(path, "rb") as f:
                for line in f:
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue  # a record torn by the cut
                    d = self.durable.setdefault(r["dir"], {})
                    if r["op"] == "add":
                        d[r["name"]] = r["id"]
                        self.meta[r["id"]] = (r["kind"], r["mode"], r.get("target", ""))
                        if r["kind"] == stat.S_IFDIR:
                            self.durable.setdefault(r["id"], {})
                        top = max(top, r["id"])
                    else:
                        d.pop(r["name"], None)
        # The visible tree starts as the durable tree reachable from the root.
        reachable = {0}
        todo = [0]
        while todo:
            d = todo.pop()
            for child in self.durable.get(d, {}).values():
                if child not in reachable:
                    reachable.add(child)
                    if self.meta[child][0] == stat.S_IFDIR:
                        todo.append(child)
        for ino in reachable:
            kind, mode, target = self.meta[ino]
            n = self.nodes[ino] = Node(ino, kind, mode, target)
            if kind == stat.S_IFDIR:
                n.entries = dict(self.durable.get(ino, {}))
        for ino in reachable:
            for child in self.nodes[ino].entries.values():
                self.nodes[child].nlink += 1
        # Content of files no durable name reaches is garbage, like an orphan inode.
        for name in os.listdir(self.backing):
            if name.startswith("f") and name[1:].isdigit():
                ino = int(name[1:])
                top = max(top, ino)
                if ino in self.nodes and self.nodes[ino].kind == stat.S_IFREG:
                    n = self.nodes[ino]
                    n.size = n.dsize = os.path.getsize(os.path.join(self.backing, name))
                else:
                    os.unlink(os.path.join(self.backing, name))
        self.next_ino = top + 1

    def _store(self, n: Node) -> int | None:
        fd = self.fds.get(n.id)
        if fd is None:
            p = os.path.join(self.backing, f"f{n.id}")
            if not os.path.exists(p):
                return None
            fd = self.fds[n.id] = os.open(p, os.O_RDWR)
        return fd

    def _durable_bytes(self, n: Node, off: int, end: int) -> bytes:
        lim = min(end, n.dsize, n.zero_from)
        fd = self._store(n) if off < lim else None
        return os.pread(fd, lim - off, off) if fd is not None else b""

    def _sync_file(self, n: Node) -> None:
        if n.kind != stat.S_IFREG:
            return
        fd = self._store(n)
        if fd is None:
            fd = self.fds[n.id] = os.open(os.path.join(self.backing, f"f{n.id}"), os.O_RDWR | os.O_CREAT, 0o600)
        if n.zero_from < n.dsize:
            os.ftruncate(fd, n.zero_from)
        for p, page in sorted(n.dirty.items()):
            start = p * PAGE
            if start < n.size:
                os.pwrite(fd, bytes(page[: min(PAGE, n.size - start)]), start)
        os.ftruncate(fd, n.size)
        n.dirty.clear()
        n.dsize, n.zero_from = n.size, INF

    def _sync_dir(self, d: Node) -> None:
        durable = self.durable.setdefault(d.id, {})
        records = []
        for name in sorted(d.changed):
            ino = d.entries.get(name)
            if ino is None:
                if name in durable:
                    del durable[name]
                    records.append({"op": "del", "dir": d.id, "name": name})
            elif durable.get(name) != ino or self.meta.get(ino) is None:
                n = self.nodes[ino]
                durable[name] = ino
                self.meta[ino] = (n.kind, n.mode, n.target)
                if n.kind == stat.S_IFDIR:
                    self.durable.setdefault(ino, {})
                records.append({"op": "add", "dir": d.id, "name": name, "id": ino, "kind": n.kind,
                                "mode": n.mode, "target": n.target})
        d.changed.clear()
        if records:
            os.write(self.journal, b"".join(json.dumps(r).encode() + b"\n" for r in records))

    # --- visible tree -----------------------------------------------------------------------

    def _lookup(self, path: str) -> Node:
        n = self.nodes[0]
        for part in path.split("/"):
            if not part:
                continue
            if n.kind != stat.S_IFDIR:
                raise OSError(errno.ENOTDIR, path)
            ino = n.entries.get(part)
            if ino is None:
                raise OSError(errno.ENOENT, path)
            n = self.nodes[ino]
        return n

    def _parent(self, path: str) -> tuple[Node, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        d = self._lookup(head)
        if d.kind != stat.S_IFDIR:
            raise OSError(errno.ENOTDIR, path)
        return d, name

    def _node(self, path: str | None, fh: int | None) -> Node:
        if fh is not None and fh in self.handles:
            return self.nodes[self.handles[fh]]
        if path is None:
            raise OSError(errno.EBADF, "no path")
        return self._lookup(path)

    def _link(self, d: Node, name: str, n: Node) -> None:
        d.entries[name] = n.id
        d.changed.add(name)
        n.nlink += 1
        d.mtime = time.time_ns()

    def _unlink(self, d: Node, name: str) -> None:
        n = self.nodes[d.entries.pop(name)]
        d.changed.add(name)
        n.nlink -= 1
        d.mtime = time.time_ns()

    def _new(self, path: str, kind: int, mode: int, target: str = "") -> Node:
        d, name = self._parent(path)
        if name in d.entries:
            raise OSError(errno.EEXIST, path)
        n = Node(self.next_ino, kind, mode, target)
        self.next_ino += 1
        self.nodes[n.id] = n
        self._link(d, name, n)
        return n

    def _handle(self, n: Node) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = n.id
        return fh

    # --- FUSE operations (mfusepy's Operations interface) -----------------------------------

    def getattr(self, path, fh=None):
        n = self._node(path, fh)
        size = len(n.target) if n.kind == stat.S_IFLNK else n.size
        return {"st_mode": n.kind | n.mode, "st_ino": n.id, "st_nlink": max(n.nlink, 1), "st_size": size,
                "st_uid": n.uid, "st_gid": n.gid, "st_blksize": PAGE, "st_blocks": (size + 511) // 512,
                "st_mtime": n.mtime, "st_ctime": n.mtime, "st_atime": n.mtime}

    def readdir(self, path, fh):
        d = self._lookup(path)
        # use_ino: the inode goes into each dirent (readdir(3) skips an entry whose d_ino is 0).
        out = [(".", {"st_mode": stat.S_IFDIR, "st_ino": d.id or 1}, 0), ("..", {"st_mode": stat.S_IFDIR, "st_ino": 1}, 0)]
        for name, ino in d.entries.items():
            out.append((name, {"st_mode": self.nodes[ino].kind, "st_ino": ino}, 0))
        return out

    def opendir(self, path):
        return self._handle(self._lookup(path))

    def releasedir(self, path, fh):
        self.handles.pop(fh, None)
        return 0

    def mkdir(self, path, mode):
        self._new(path, stat.S_IFDIR, mode)
        return 0

    def rmdir(self, path):
        d, name = self._parent(path)
        n = self._lookup(path)
        if n.kind != stat.S_IFDIR:
            raise OSError(errno.ENOTDIR, path)
        if n.entries:
            raise OSError(errno.ENOTEMPTY, path)
        self._unlink(d, name)
        return 0

    def mknod(self, path, mode, dev):
        self._new(path, stat.S_IFMT(mode) or stat.S_IFREG, mode)
        return 0

    def symlink(self, target, source):
        self._new(target, stat.S_IFLNK, 0o777, source)
        return 0

    def readlink(self, path):
        return self._lookup(path).target

    def create(self, path, mode, fi=None):
        return self._handle(self._new(path, stat.S_IFREG, mode))

    def open(self, path, flags):
        n = self._lookup(path)
        if flags & os.O_TRUNC:
            self._truncate(n, 0)
        return self._handle(n)

    def release(self, path, fh):
        self.handles.pop(fh, None)
        return 0

    def flush(self, path, fh):
        return 0

    def unlink(self, path):
        d, name = self._parent(path)
        if name not in d.entries:
            raise OSError(errno.ENOENT, path)
        if self.nodes[d.entries[name]].kind == stat.S_IFDIR:
            raise OSError(errno.EISDIR, path)
        self._unlink(d, name)
        return 0

    def link(self, target, source):
        n = self._lookup(source)
        d, name = self._parent(target)
        if name in d.entries:
            raise OSError(errno.EEXIST, target)
        self._link(d, name, n)
        return 0

    def rename(self, old, new):
        od, oname = self._parent(old)
        nd, nname = self._parent(new)
        if oname not in od.entries:
            raise OSError(errno.ENOENT, old)
        n = self.nodes[od.entries[oname]]
        if nname in nd.entries:
            victim = self.nodes[nd.entries[nname]]
            if victim.id == n.id:
                return 0
            if victim.kind == stat.S_IFDIR and (n.kind != stat.S_IFDIR or victim.entries):
                raise OSError(errno.ENOTEMPTY if victim.entries else errno.EISDIR, new)
            self._unlink(nd, nname)
        self._unlink(od, oname)
        self._link(nd, nname, n)
        return 0

    def chmod(self, path, mode):
        self._lookup(path).mode = mode & 0o7777
        return 0

    def chown(self, path, uid, gid):
        n = self._lookup(path)
        n.uid = n.uid if uid == -1 else uid
        n.gid = n.gid if gid == -1 else gid
        return 0

    def utimens(self, path, times=None):
        n = self._lookup(path)
        n.mtime = times[1] if times else time.time_ns()
        return 0

    def statfs(self, path):
        return {"f_bsize": PAGE, "f_frsize": PAGE, "f_blocks": 1 << 24, "f_bfree": 1 << 23,
                "f_bavail": 1 << 23, "f_files": 1 << 20, "f_ffree": 1 << 19, "f_namemax": 255}

    def read(self, path, size, offset, fh):
        n = self._node(path, fh)
        end = min(offset + size, n.size)
        if offset >= end:
            return b""
        out = bytearray(end - offset)
        base = self._durable_bytes(n, offset, end)
        out[: len(base)] = base
        for p in range(offset // PAGE, (end - 1) // PAGE + 1):
            page = n.dirty.get(p)
            if page is not None:
                lo, hi = max(offset, p * PAGE), min(end, p * PAGE + PAGE)
                out[lo - offset: hi - offset] = page[lo - p * PAGE: hi - p * PAGE]
        return bytes(out)

    def write(self, path, data, offset, fh):
        n = self._node(path, fh)
        end = offset + len(data)
        for p in range(offset // PAGE, (end - 1) // PAGE + 1 if data else offset // PAGE):
            page = n.dirty.get(p)
            if page is None:
                page = bytearray(PAGE)
                base = self._durable_bytes(n, p * PAGE, p * PAGE + PAGE)
                page[: len(base)] = base
                n.dirty[p] = page
            lo, hi = max(offset, p * PAGE), min(end, p * PAGE + PAGE)
            page[lo - p * PAGE: hi - p * PAGE] = data[lo - offset: hi - offset]
        n.size = max(n.size, end)
        n.mtime = time.time_ns()
        return len(data)

    def _truncate(self, n: Node, length: int) -> None:
        if n.kind != stat.S_IFREG:
            raise OSError(errno.EINVAL, "not a file")
        if length < n.size:
            for p in [p for p in n.dirty if p * PAGE >= length]:
                del n.dirty[p]
            page = n.dirty.get(length // PAGE)
            if page is not None:
                page[length % PAGE:] = bytes(PAGE - length % PAGE)
            n.zero_from = min(n.zero_from, length)
        n.size = length
        n.mtime = time.time_ns()

    def truncate(self, path, length, fh=None):
        self._truncate(self._node(path, fh), length)
        return 0

    def fsync(self, path, datasync, fh):
        self._sync_file(self._node(path, fh))
        return 0

    def fsyncdir(self, path, datasync, fh):
        n = self._node(path, fh)
        if n.kind == stat.S_IFDIR:
            self._sync_dir(n)
        return 0


def main() -> None:
    import mfusepy

    class Fuse(mfusepy.FUSE):
        def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
            # RENAME_NOREPLACE/EXCHANGE are not modelled: refuse them rather than ignore them.
            return -errno.EINVAL if flags else super().rename_fuse_3(old, new, flags)

    backing, mountpoint = sys.argv[1], sys.argv[2]

    class Ops(mfusepy.Operations):
        pass

    fs = LossyFs(backing)
    # Only the methods defined on LossyFs are registered with libfuse.
    for name in dir(LossyFs):
        if not name.startswith("_") and callable(getattr(LossyFs, name)) and hasattr(mfusepy.Operations, name):
            setattr(Ops, name, getattr(fs, name))
    ops = Ops()
    ops.use_ns = True
    Fuse(ops, mountpoint, foreground=True, nothreads=True, fsname="lossyfs", use_ino=True)


if __name__ == "__main__":
    main()
