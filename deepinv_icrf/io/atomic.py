r"""Outputs that are complete or absent: atomic files and staged sets of files.

Every file this package writes goes through :func:`atomic_write` or :func:`atomic_path`: the
data is written to a temporary file in the destination folder and renamed over the destination
(:func:`os.replace`, atomic on POSIX and Windows) only once it is complete, so an interrupted or
failing writer never leaves a partial output file.

A command that writes several files (``fit`` writes ``icrf.json``, ``icrf_fit.png`` and
``summary.json``; ``merge`` a radiance map, a std map and a preview) stages them with an
:class:`OutputSet`: each file is written into a hidden temporary folder beside its target, and
the whole set is moved into place at the end, while ``SIGINT``/``SIGTERM`` are held back and
other commits into the same folder wait (a lock on the folder). A failure, a signal or a full
disk before that leaves the previous state untouched; two runs into one folder leave one
complete set. The set also refuses an output path that is one of the command's inputs (a
symlink or hard link to one included) or another of its outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "write_json", "OutputSet"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    r"""Yield a temporary path beside ``path``; rename it over ``path`` if the block succeeds.

    The temporary file lives in the destination folder (so the final :func:`os.replace` is an
    atomic rename on one file system), is hidden (leading dot) and keeps the destination's
    extension, so writers that pick a format from the extension (matplotlib, OpenEXR) work. If
    the block raises, the temporary file is removed and ``path`` is left untouched.

    :param str, os.PathLike path: the destination file. Its folder must exist.
    :return: (:class:`pathlib.Path`) the temporary path to write to.

    |sep|

    :Example:

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (folder / "a.txt").read_text(), len(list(folder.iterdir()))
    ('done', 1)
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Cannot write {os.fspath(path)!r}: folder {os.fspath(folder)!r} does not exist."
        )
    fd, tmp_name = tempfile.mkstemp(
        dir=folder, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}"
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(f"The writer of {os.fspath(path)!r} did not create its file.")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO[Any]]:
    r"""Open a temporary file for writing; it replaces ``path`` only if the block succeeds.

    .. math::

        \text{write}(\texttt{tmp}) \;\rightarrow\; \text{fsync} \;\rightarrow\;
        \texttt{os.replace}(\texttt{tmp}, \texttt{path})

    :param str, os.PathLike path: the destination file. Its folder must exist.
    :param str mode: ``"w"`` (text, default) or ``"wb"`` (bytes).
    :param str, None encoding: text encoding (default ``"utf-8"``; ignored for ``"wb"``).
    :return: the open file object.

    |sep|

    :Example:

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "curve.json"
    >>> try:
    ...     with atomic_write(target) as fh:
    ...         _ = fh.write("partial")
    ...         raise RuntimeError("writer failed")
    ... except RuntimeError:
    ...     pass
    >>> target.exists(), list(target.parent.iterdir())
    (False, [])
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"Expected `mode` to be one of ('w', 'wb'), but got {mode!r}.")
    with atomic_path(path) as tmp:
        kwargs = {} if mode == "wb" else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    r"""Write ``obj`` as indented JSON, atomically (NaN and inf are refused).

    :param str, os.PathLike path: the destination file.
    :param obj: a JSON-serialisable object.

    |sep|

    :Example:

    >>> import json, tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "summary.json"
    >>> write_json(target, {"rmse": 0.01})
    >>> json.loads(target.read_text())
    {'rmse': 0.01}
    """
    try:
        text = json.dumps(obj, indent=2, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"Cannot write {os.fspath(path)!r}: not JSON-serialisable ({err})."
        ) from err
    with atomic_write(path) as fh:
        fh.write(text + "\n")


# ---------------------------------------------------------------------------- output sets
def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _same(a: Path, b: Path) -> bool:
    if _resolved(a) == _resolved(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _existing_ancestor(path: Path) -> Path:
    folder = path.parent if str(path.parent) else Path(".")
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    r"""Hold back SIGINT and SIGTERM: delivered, to the handlers in force before, when the
    block ends.

    Python-level handlers that only record the signal replace the usual ones meanwhile. A
    signal mask would not do: it blocks one thread, and the kernel hands a process-directed
    signal to any thread that does not block it (torch's, a progress bar's), after which
    Python raises ``KeyboardInterrupt`` in the main thread all the same. Outside the main
    thread (where handlers cannot be set), the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def record(signum: int, frame: Any) -> None:
        if signum not in received:
            received.append(signum)

    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, record)
        yield
    finally:
        for signum, handler in previous.items():
            # None: a handler set outside Python, which cannot be put back; the default then
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum in received:
            signal.raise_signal(signum)  # as if it came now: KeyboardInterrupt, or exit


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    r"""An exclusive lock on a folder (``flock`` on the folder itself; no lock file)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class OutputSet:
    r"""The output files of one command, staged and moved into place together.

    Register each output with :meth:`file` (one file) or :meth:`folder` (a folder the command
    fills) before computing anything: the path is checked then (not an input of the command,
    not another output, its folder exists) and a staging path is returned to write to. Leaving
    the ``with`` block normally moves every staged file into place (:meth:`commit`); leaving it
    with an exception (an error, ``KeyboardInterrupt``, a full disk) removes the staging
    folders and leaves every target as it was (:meth:`discard`).

    Staging folders are hidden (``.NAME.XXXX.tmp``) and beside their target, on the same file
    system, so the final moves are renames. A folder target that does not exist yet appears
    in one rename, complete; into an existing folder the files are renamed one by one, under a
    lock on the folder, with ``SIGINT``/``SIGTERM`` held back until the last one, so that
    concurrent runs leave one complete set.

    :param Iterable inputs: the files (and folders) the command reads: no output may be one of
        them, a symlink or hard link to one, or (for :meth:`folder`) the folder holding one.
    :param Callable, None reads: ``reads(path) -> bool``, whether the command reads a file at
        ``path`` were it there (e.g. any photo of its input folder): such an output would be
        read as an input by the next run, and is refused too. Default ``None``.

    |sep|

    :Example:

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> photo = root / "photo.png"
    >>> _ = photo.write_bytes(b"input")
    >>> with OutputSet(inputs=[photo]) as outputs:
    ...     stage = outputs.folder(root / "result", "--out")
    ...     _ = (stage / "a.txt").write_text("a")
    ...     _ = (stage / "b.txt").write_text("b")
    >>> sorted(p.name for p in (root / "result").iterdir())
    ['a.txt', 'b.txt']
    >>> OutputSet(inputs=[photo]).file(photo, "--out")
    Traceback (most recent call last):
    ...
    ValueError: --out '...photo.png' is an input of this command; write the output elsewhere.
    """

    def __init__(
        self,
        inputs: Iterable[str | os.PathLike] = (),
        reads: Callable[[Path], bool] | None = None,
    ) -> None:
        self._inputs = [Path(p) for p in inputs]
        self._reads = reads
        self._targets: list[tuple[str, Path]] = []
        self._files: list[tuple[Path, Path]] = []  # (staged, target)
        self._folders: list[tuple[Path, Path]] = []  # (stage folder, target folder)
        self._stages: dict[Path, Path] = {}  # folder of a target -> its staging folder
        self._done = False

    # -------------------------------------------------------------- registration
    def _check(self, path: Path, flag: str) -> None:
        for p in self._inputs:
            if _same(path, p):
                raise ValueError(
                    f"{flag} {os.fspath(path)!r} is an input of this command; write the "
                    "output elsewhere."
                )
        if self._reads is not None and self._reads(path):
            raise ValueError(
                f"{flag} {os.fspath(path)!r} is in the folder of this command's input photos "
                "and would be read as one of them on the next run; write the output elsewhere."
            )
        for other_flag, other in self._targets:
            if _same(path, other):
                raise ValueError(
                    f"{flag} {os.fspath(path)!r} is also the output of {other_flag}; give "
                    "each output its own path."
                )

    def _stage_in(self, folder: Path, name: str) -> Path:
        key = _resolved(folder)
        if key not in self._stages:
            self._stages[key] = Path(
                tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
            )
        return self._stages[key]

    @staticmethod
    def check_target(path: str | os.PathLike, flag: str = "output") -> Path:
        r"""Refuse an output file whose folder does not exist or that is a folder, before
        any work (:meth:`file` checks it again when the output is registered).

        :param str, os.PathLike path: the target file.
        :param str flag: how messages name it (e.g. ``"--out"``).
        :return: (:class:`pathlib.Path`) its folder.
        :raises ValueError: for a missing folder or a target that is a folder.

        |sep|

        :Example:

        >>> from deepinv_icrf.io import OutputSet
        >>> OutputSet.check_target("/no/such/folder/x.exr", "--out")
        Traceback (most recent call last):
        ...
        ValueError: --out '/no/such/folder/x.exr': folder '/no/such/folder' does not exist.
        """
        path = Path(path)
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise ValueError(
                f"{flag} {os.fspath(path)!r}: folder {os.fspath(folder)!r} does not exist."
            )
        if path.is_dir():
            raise ValueError(f"{flag} {os.fspath(path)!r} is a folder, not a file.")
        return folder

    def file(self, path: str | os.PathLike, flag: str = "output") -> Path:
        r"""Register the output file ``path``; return the staged path to write it to.

        :param str, os.PathLike path: the target file; its folder must exist.
        :param str flag: how messages name it (e.g. ``"--out"``).
        :return: (:class:`pathlib.Path`) where to write (same name, in a staging folder).
        :raises ValueError: for a target that is an input, another output, an existing folder,
            or in a folder that does not exist.
        """
        path = Path(path)
        folder = self.check_target(path, flag)
        self._check(path, flag)
        self._targets.append((flag, path))
        staged = self._stage_in(folder, path.name) / path.name
        self._files.append((staged, path))
        return staged

    def folder(self, path: str | os.PathLike, flag: str = "output") -> Path:
        r"""Register the output folder ``path`` (created if needed); return its staging folder.

        :param str, os.PathLike path: the target folder (missing parents are created at the
            end).
        :param str flag: how messages name it (e.g. ``"--out"``).
        :return: (:class:`pathlib.Path`) an empty folder to write the command's files to.
        :raises ValueError: for a target that exists and is not a folder, lies under a file,
            is an input, holds an input file, or is another output.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ValueError(f"{flag} {os.fspath(path)!r} exists and is not a folder.")
        self._check(path, flag)
        for p in self._inputs:
            if path.exists() and p.parent.exists() and _same(path, p.parent):
                raise ValueError(
                    f"{flag} {os.fspath(path)!r} is the folder of the input "
                    f"{os.fspath(p)!r}; write the outputs to another folder."
                )
        ancestor = _existing_ancestor(path)
        if not ancestor.is_dir():
            raise ValueError(
                f"{flag} {os.fspath(path)!r}: {os.fspath(ancestor)!r} is a file, not a "
                "folder."
            )
        self._targets.append((flag, path))
        stage = Path(
            tempfile.mkdtemp(
                prefix=f".{path.name or 'out'}.",
                suffix=".tmp",
                dir=ancestor,
            )
        )
        self._folders.append((stage, path))
        return stage

    # -------------------------------------------------------------- commit / discard
    def _remove_stages(self) -> None:
        for stage in list(self._stages.values()) + [s for s, _ in self._folders]:
            shutil.rmtree(stage, ignore_errors=True)

    def discard(self) -> None:
        r"""Remove every staged file; the targets stay as they were."""
        self._remove_stages()
        self._done = True

    def commit(self) -> None:
        r"""Move every staged file into place (signals held back, folders locked)."""
        moves: list[tuple[Path, Path]] = []
        for staged, target in self._files:
            if not staged.exists():
                # nothing lands, and nothing is left behind: the other staged files go too
                self.discard()
                raise OSError(f"The writer of {os.fspath(target)!r} did not create it.")
            moves.append((staged, target))
        mask = 0o666 & ~_umask()
        with _signals_held():
            try:
                for stage, target in self._folders:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    for item in stage.iterdir():
                        os.chmod(item, mask)
                    with _folder_lock(target.parent):
                        if not target.exists():
                            os.chmod(stage, 0o777 & ~_umask())
                            os.rename(stage, target)  # the whole set appears at once
                            continue
                    moves.extend((item, target / item.name) for item in stage.iterdir())
                for staged, _ in moves:
                    os.chmod(staged, mask)
                folders = {_resolved(t.parent) for _, t in moves}
                with contextlib.ExitStack() as locks:
                    for folder in sorted(folders):
                        locks.enter_context(_folder_lock(folder))
                    for staged, target in moves:
                        os.replace(staged, target)
            finally:
                self._remove_stages()
                self._done = True

    def target_of(self, path: str | os.PathLike) -> Path | None:
        r"""The target of a staged path (a file of a staging folder), else ``None``."""
        path = Path(path)
        for staged, target in self._files:
            if path == staged:
                return target
        for stage, target in self._folders:
            if path.parent == stage:
                return target / path.name
        return None

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.commit()
            return
        self.discard()
        if isinstance(value, OSError) and value.filename is not None:
            # name the output the user asked for, not its staging path
            target = self.target_of(value.filename)
            if target is not None:
                value.filename = os.fspath(target)
        elif isinstance(value, OSError) and value.strerror and self._targets:
            # a failed write() names no file (a full disk): name the command's first output
            value.filename = os.fspath(self._targets[0][1])
