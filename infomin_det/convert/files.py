"""The form of every path ``convert`` and ``verify`` touch, checked before any work is done.

* :func:`show` -- a path or key as one printable line (names with newlines cannot split an error).
* :func:`describe` -- what a file really holds, from its first bytes ("a torch.save archive", ...).
* :func:`check_input` -- a file to read: exists, a regular file (never a FIFO, device or socket,
  which would block or read forever), readable, not empty.
* :func:`check_output` -- a new regular ``.pkl`` in an existing writable directory, not a link,
  not the source; creating a file there is tried (and undone) up front.
* :func:`check_space` / :func:`os_error` -- free space before writing, and an ``OSError`` turned into
  a one-line cause and fix by its errno (full disk, read-only filesystem, /proc, name too long...).

Everything raises :class:`~infomin_det.errors.UserError`. No torch here.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import zipfile
from pathlib import Path

from infomin_det.errors import UserError

TMP_SUFFIX = ".tmp"  # infomin_det.atomic.atomic_write names its temp file ".{name}.XXXXXXXX.tmp"
_TMP_EXTRA = len(".") + len(".") + 8 + len(TMP_SUFFIX)
_ZIP_MAGIC = b"PK\x03\x04"
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # pickled magic number
_NOT_REGULAR = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"))


def show(name: object) -> str:
    """``name`` as one printable line: as is when printable, else Python-quoted (``'a\\nb.pkl'``)."""
    s = os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else str(name)
    return s if s.isprintable() else repr(s)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a file"
    return next((what for test, what in _NOT_REGULAR if test(mode)), "not a regular file")


def describe(path: Path, head: bytes | None = None) -> str:
    """What ``path`` (a regular file) holds, judged by its first bytes and, for a zip, its members."""
    if head is None:
        with open(path, "rb") as f:
            head = f.read(512)
    if not head:
        return "an empty file (0 bytes)"
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "a truncated or corrupt zip archive (no zip central directory)"
        if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
            return "a torch.save archive"
        if names and all(n.endswith(".npy") for n in names):
            return "a numpy .npz archive"
        return f"a zip archive that is not a torch.save archive (members: {show(', '.join(names[:3]))})"
    if head.startswith(LEGACY_TORCH_MAGIC):
        return "a legacy (pre-1.6) torch.save file"
    if head[:1] == b"\x80" or head[:1] in (b"(", b"}", b"]"):
        return "a plain pickle"
    if head.startswith(b"\x93NUMPY"):
        return "a numpy .npy array"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (Keras/TensorFlow weights?)"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "a tar archive"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 28:
        return "a safetensors file"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "a text file"
        except UnicodeDecodeError:
            pass
    if not head.strip(b"\x00"):
        return "all zero bytes (a preallocated or never-written file)"
    return "a binary file of unknown format"


def check_input(path: str | os.PathLike, what: str, fix_missing: str) -> Path:
    """``path`` if it is a non-empty regular file we can read; else UserError saying what it is."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise UserError(f"{what} {show(path)} is a broken symbolic link (to {show(os.readlink(path))})",
                            fix_missing) from None
        raise UserError(f"{what} {show(path)}: no such file", fix_missing) from None
    except NotADirectoryError:
        raise UserError(f"{what} {show(path)}: no such file (a component of the path is a file)", fix_missing) from None
    except OSError as e:
        raise os_error(e, path, f"{what} {show(path)}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = _kind(st.st_mode)
        fix = ("pass the file itself, not its directory" if kind == "a directory"
               else "pass a regular file (save a stream to a file first)")
        raise UserError(f"{what} {show(path)} is {kind}, not a file", fix)
    if st.st_size == 0:
        if _is_virtual(path.parent):
            raise UserError(f"{what} {show(path)} is on a virtual filesystem (like /proc or /sys), not a checkpoint",
                            "pass a checkpoint file on disk")
        raise UserError(f"{what} {show(path)} is empty (0 bytes)", "copy or download it again")
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise UserError(f"{what} {show(path)} cannot be read: permission denied",
                        "make it readable for this user (chmod), or copy it somewhere you can read") from None
    except OSError as e:
        raise os_error(e, path, f"{what} {show(path)}") from None
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _suggest_pkl(out: Path) -> str:
    name = out.name
    if out.suffix:
        name = out.stem
    elif name.lstrip(".") in ("", "pkl", "PKL"):
        name = "weights"
    return name + ".pkl"


def check_output(out: str | os.PathLike, force: bool, src: str | os.PathLike | None = None) -> Path:
    """Refuse an output path we must not (or cannot) write, before any work is done.

    The output must be a ``.pkl`` name without control characters, in an existing directory where
    a file can be created; an existing output must be a regular file other than the source, and
    is replaced only with ``force``. Links are refused: convert replaces files, it does not write
    through links (``os.replace`` would silently swap the link for a file).
    """
    out = Path(out)
    if any(c < " " or c == "\x7f" for c in str(out)):
        raise UserError(f"output name {show(out)} contains a control character (newline, tab, ...)",
                        "choose a name of printable characters; configs and logs carry this path")
    try:
        lst = os.lstat(out)
    except FileNotFoundError:
        lst = None
    except NotADirectoryError:
        lst = None  # a component is a file: reported with the directory below
    except OSError as e:
        raise os_error(e, out, f"output {show(out)}") from None
    if lst is not None:
        if stat.S_ISLNK(lst.st_mode):
            target = show(os.readlink(out))
            if src is not None and _same_file(out, Path(src)):
                raise UserError(f"output {show(out)} is a symbolic link to the source file ({target})",
                                "write the converted weights to a new file")
            raise UserError(f"output {show(out)} is a symbolic link (to {target}); convert replaces files "
                            "and does not write through links", f"remove the link, or write to {target} directly")
        if stat.S_ISDIR(lst.st_mode):
            raise UserError(f"output {show(out)} is a directory", f"name a file inside it: {show(out / 'weights.pkl')}")
        if not stat.S_ISREG(lst.st_mode):
            raise UserError(f"output {show(out)} is {_kind(lst.st_mode)}, not a file; convert writes a regular "
                            ".pkl file", "name a new .pkl file")
        if src is not None and _same_file(out, Path(src)):
            same = "the source file" + ("" if out.resolve() == Path(src).resolve() else " (a hard link to it)")
            raise UserError(f"output {show(out)} is {same}", "write the converted weights to a new file")
    if out.suffix != ".pkl":
        raise UserError(f"output {show(out)} does not end in .pkl; Detectron2 reads only .pkl files as its own "
                        "format (anything else is torch.load-ed without the name matching)",
                        f"name the output {show(out.with_name(_suggest_pkl(out)))}")
    if lst is not None and not force:
        raise UserError(f"output {show(out)} exists", "pass --force to overwrite it, or choose another name")
    parent = out.parent
    _check_directory(parent)
    _probe(parent, out.name)
    return out


def _check_directory(parent: Path) -> None:
    for p in [*reversed(parent.parents), parent]:
        try:
            st = p.stat()
        except FileNotFoundError:
            raise UserError(f"output directory {show(parent)} does not exist",
                            f"create it first: mkdir -p {show(parent)}") from None
        except OSError as e:
            raise os_error(e, p, f"output directory {show(parent)}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise UserError(f"output directory {show(parent)}: {show(p)} is {_kind(st.st_mode)}, not a directory",
                            "choose an output path inside a directory")


def _probe(parent: Path, name: str) -> None:
    """Create (and remove) a file named as atomic_write will name its temp file: the real test."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=TMP_SUFFIX, dir=parent)
    except OSError as e:
        what = (f"output directory {show(parent)} is not writable" if e.errno in (errno.EACCES, errno.EPERM)
                else f"cannot create {show(parent / name)}")
        raise os_error(e, parent / name, what) from None
    os.close(fd)
    os.unlink(tmp)


def _free_bytes(directory: Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize if st.f_blocks else None  # 0 blocks: the fs reports no sizes


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def check_space(out: Path, need: int) -> None:
    """UserError if the filesystem of ``out`` reports fewer free bytes than ``need``."""
    free = _free_bytes(out.parent)
    if free is not None and free < need:
        raise UserError(f"not enough space for {show(out)}: {_mib(free)} free on its filesystem, "
                        f"the weights need {_mib(need)}", "free disk space or choose another output directory")


def os_error(e: OSError, path: Path, what: str) -> UserError:
    """One-line cause and fix for an ``OSError`` met reading or writing ``path``; ``what`` leads the cause."""
    code = e.errno
    where = path.parent if path.parent != path else path
    if code in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(where)
        left = f" ({_mib(free)} free)" if free is not None else ""
        cause = "disk quota exceeded" if code == errno.EDQUOT else f"no space or no free inodes left on the device{left}"
        return UserError(f"{what}: {cause}", "free disk space or choose another output directory")
    if code == errno.EROFS:
        return UserError(f"{what}: {show(where)} is on a read-only filesystem", "choose a writable output directory")
    if code == errno.ENAMETOOLONG:
        limit = _name_max(where)
        return UserError(f"{what}: file name too long ({len(os.fsencode(path.name))} bytes; the filesystem allows "
                         f"{limit}, and writing needs {_TMP_EXTRA} more for the temporary file)",
                         f"shorten the name to at most {limit - _TMP_EXTRA} bytes")
    if code in (errno.EACCES, errno.EPERM, errno.ENOENT, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV):
        if _is_virtual(where):
            return UserError(f"{what}: {show(where)} is on a virtual filesystem (like /proc or /sys) that holds no "
                             "regular files", "choose an output directory on disk")
        if code in (errno.EACCES, errno.EPERM):
            return UserError(f"{what}: permission denied", "choose a writable output directory")
    return UserError(f"{what}: {e.strerror or e}", "choose another path")


def _is_virtual(directory: Path) -> bool:
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_blocks == 0


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255
