"""The seccomp filter of the bubblewrap backend.

A Docker container gets the engine's default seccomp profile; a bwrap sandbox gets
none unless it is given one (``bwrap --seccomp FD``). This module compiles one with
libseccomp (through ``pyseccomp``, a ctypes binding) and hands it to bwrap as a
memfd. The filter allows by default and refuses, with ``EPERM``, the kernel
interfaces that code preparing jobs over text never needs and that are the usual
way out of a namespace sandbox: tracing and reading other processes, new
namespaces, mounts, keyrings, eBPF, perf, io_uring, userfaultfd, kernel modules,
clocks and reboot; plus sockets other than ``AF_UNIX`` (``EAFNOSUPPORT``), the
terminal-injection ioctls, and ``clone`` with namespace flags (``clone3`` gets
``ENOSYS`` so that libc falls back to ``clone``, whose flags can be checked, as
Docker's profile does).
"""

from __future__ import annotations

import errno
import logging
import os
from functools import lru_cache

log = logging.getLogger(__name__)

DENIED_SYSCALLS: tuple[str, ...] = (
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "personality",
    # namespaces, mounts, roots
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "open_by_handle_at", "name_to_handle_at",
    # kernel attack surface
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key", "fanotify_init", "lookup_dcookie", "syslog",
    # the machine itself
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "iopl", "ioperm", "vhangup", "mbind", "set_mempolicy", "move_pages", "migrate_pages",
)

# clone(2) flags that make namespaces: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)
TERMINAL_INJECTION_IOCTLS = (0x5412, 0x541C)  # TIOCSTI, TIOCLINUX
AF_UNIX = 1


class SeccompUnavailable(RuntimeError):
    """libseccomp cannot be loaded, so the filter cannot be compiled."""


@lru_cache(maxsize=1)
def compiled_filter() -> bytes:
    """The filter as a BPF program for ``bwrap --seccomp``, compiled once per process."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError, RuntimeError) as exc:  # the binding loads libseccomp.so.2 at import
        raise SeccompUnavailable(
            f"libseccomp cannot be loaded ({exc}): install it (Debian/Ubuntu: apt-get install libseccomp2)"
        ) from exc
    flt = sc.SyscallFilter(defaction=sc.ALLOW)
    denied = 0
    for name in DENIED_SYSCALLS:
        try:
            flt.add_rule(sc.ERRNO(errno.EPERM), name)
            denied += 1
        except OSError:
            log.debug("seccomp: libseccomp does not know %s on this architecture", name)
    flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for flag in NAMESPACE_FLAGS:  # rules on one syscall are alternatives: any one flag is refused
        flt.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    flt.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.NE, AF_UNIX))
    for request in TERMINAL_INJECTION_IOCTLS:  # masked: the kernel ignores the upper 32 bits (CVE-2019-10063)
        flt.add_rule(sc.ERRNO(errno.EPERM), "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    fd = os.memfd_create("minionflow-seccomp-compile", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as sink:
            flt.export_bpf(sink)
        program = os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)
    log.info("seccomp filter: %d syscalls refused, %d bytes of BPF", denied, len(program))
    return program


def filter_fd() -> int:
    """A new file descriptor holding the compiled filter, positioned at its start.
    The caller passes it to bwrap (``pass_fds``) and closes it afterwards."""
    program = compiled_filter()
    fd = os.memfd_create("minionflow-seccomp", os.MFD_CLOEXEC)
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
