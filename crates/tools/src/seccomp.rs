//! The seccomp program of the tool sandbox, in the form bubblewrap's `--seccomp FD` reads: a
//! raw array of classic BPF instructions (`struct sock_filter`, 8 bytes each, native endian).
//!
//! It is a deny-list on top of what bubblewrap already takes away (capabilities, new
//! privileges): system calls a build, a test run or an interpreter never needs and that are a
//! kernel's usual attack surface fail with EPERM (ptrace, mounts, modules, kexec, BPF, perf,
//! keyrings, io_uring, namespace creation and joining, other processes' memory, clock
//! setting, ...). `clone3` fails with ENOSYS, so the C library falls back to `clone`, whose
//! flags a filter can read: a `clone` or `unshare` asking for a new namespace fails. Calls of
//! another architecture (32-bit entry points) kill the process; the x32 ABI fails with EPERM.
//! Built for x86_64; elsewhere there is no program and the sandbox runs without this layer.

#[cfg(target_arch = "x86_64")]
pub(crate) fn program() -> Option<Vec<u8>> {
    Some(encode(&x86_64()))
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn program() -> Option<Vec<u8>> {
    None
}

/// One classic BPF instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const LD_W_ABS: u16 = 0x20;
const JEQ: u16 = 0x15;
const JGE: u16 = 0x35;
const JSET: u16 = 0x45;
const RET: u16 = 0x06;

const ALLOW: u32 = 0x7fff_0000;
const KILL_PROCESS: u32 = 0x8000_0000;
const ERRNO: u32 = 0x0005_0000;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME.
const CLONE_NEW_ANY: u32 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000 | 0x80;

/// x86_64 numbers of the calls that fail with EPERM.
const DENIED_X86_64: &[(&str, u32)] = &[
    ("ptrace", 101),
    ("syslog", 103),
    ("personality", 135),
    ("vhangup", 153),
    ("pivot_root", 155),
    ("adjtimex", 159),
    ("acct", 163),
    ("settimeofday", 164),
    ("mount", 165),
    ("umount2", 166),
    ("swapon", 167),
    ("swapoff", 168),
    ("reboot", 169),
    ("iopl", 172),
    ("ioperm", 173),
    ("init_module", 175),
    ("delete_module", 176),
    ("quotactl", 179),
    ("lookup_dcookie", 212),
    ("clock_settime", 227),
    ("kexec_load", 246),
    ("add_key", 248),
    ("request_key", 249),
    ("keyctl", 250),
    ("perf_event_open", 298),
    ("name_to_handle_at", 303),
    ("open_by_handle_at", 304),
    ("setns", 308),
    ("process_vm_readv", 310),
    ("process_vm_writev", 311),
    ("kcmp", 312),
    ("finit_module", 313),
    ("kexec_file_load", 320),
    ("bpf", 321),
    ("userfaultfd", 323),
    ("io_uring_setup", 425),
    ("io_uring_enter", 426),
    ("io_uring_register", 427),
    ("open_tree", 428),
    ("move_mount", 429),
    ("fsopen", 430),
    ("fsconfig", 431),
    ("fsmount", 432),
    ("pidfd_getfd", 438),
    ("mount_setattr", 442),
];
const CLONE: u32 = 56;
const UNSHARE: u32 = 272;
const CLONE3: u32 = 435;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn x86_64() -> Vec<Insn> {
    let mut p = vec![
        insn(LD_W_ABS, 0, 0, ARCH),
        insn(JEQ, 1, 0, AUDIT_ARCH_X86_64),
        insn(RET, 0, 0, KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, NR),
        insn(JGE, 0, 1, X32_SYSCALL_BIT),
        insn(RET, 0, 0, ERRNO | EPERM),
    ];
    for (_, nr) in DENIED_X86_64 {
        p.push(insn(JEQ, 0, 1, *nr));
        p.push(insn(RET, 0, 0, ERRNO | EPERM));
    }
    p.push(insn(JEQ, 0, 1, CLONE3));
    p.push(insn(RET, 0, 0, ERRNO | ENOSYS));
    for nr in [CLONE, UNSHARE] {
        // Not this call: skip the flag check. Else load the flags, refuse a new namespace,
        // and reload the number for the checks after.
        p.push(insn(JEQ, 0, 4, nr));
        p.push(insn(LD_W_ABS, 0, 0, ARG0_LOW));
        p.push(insn(JSET, 0, 1, CLONE_NEW_ANY));
        p.push(insn(RET, 0, 0, ERRNO | EPERM));
        p.push(insn(LD_W_ABS, 0, 0, NR));
    }
    p.push(insn(RET, 0, 0, ALLOW));
    p
}

fn encode(program: &[Insn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for i in program {
        out.extend(i.code.to_ne_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend(i.k.to_ne_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program over one call, as the kernel would: the action it returns.
    fn eval(program: &[Insn], arch: u32, nr: u32, arg0: u32) -> u32 {
        let data = |off: u32| match off {
            NR => nr,
            ARCH => arch,
            ARG0_LOW => arg0,
            _ => panic!("unexpected load at {off}"),
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = program[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => acc = data(i.k),
                RET => return i.k,
                JEQ | JGE | JSET => {
                    let taken = match i.code {
                        JEQ => acc == i.k,
                        JGE => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn denied_calls_fail_and_everything_else_is_allowed() {
        let p = x86_64();
        for (name, nr) in DENIED_X86_64 {
            assert_eq!(eval(&p, AUDIT_ARCH_X86_64, *nr, 0), ERRNO | EPERM, "{name}");
        }
        for allowed in [0, 1, 2, 39, 57, 59, 61, 231] {
            // read, write, open, getpid, fork, execve, wait4, exit_group
            assert_eq!(eval(&p, AUDIT_ARCH_X86_64, allowed, 0), ALLOW, "syscall {allowed}");
        }
        assert_eq!(eval(&p, AUDIT_ARCH_X86_64, CLONE3, 0), ERRNO | ENOSYS);
        assert_eq!(eval(&p, 0x4000_0003, 1, 0), KILL_PROCESS, "i386 entry points kill");
        assert_eq!(eval(&p, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 1, 0), ERRNO | EPERM, "x32");
    }

    #[test]
    fn clone_and_unshare_may_not_create_namespaces() {
        let p = x86_64();
        // A thread (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD) and a fork.
        assert_eq!(eval(&p, AUDIT_ARCH_X86_64, CLONE, 0x0001_0f00), ALLOW);
        assert_eq!(eval(&p, AUDIT_ARCH_X86_64, CLONE, 0x11), ALLOW);
        for flag in [0x1000_0000, 0x2000_0000, 0x4000_0000, 0x0002_0000, 0x80] {
            assert_eq!(eval(&p, AUDIT_ARCH_X86_64, CLONE, 0x11 | flag), ERRNO | EPERM, "clone {flag:#x}");
            assert_eq!(eval(&p, AUDIT_ARCH_X86_64, UNSHARE, flag), ERRNO | EPERM, "unshare {flag:#x}");
        }
        // unshare of the file table only is harmless.
        assert_eq!(eval(&p, AUDIT_ARCH_X86_64, UNSHARE, 0x400), ALLOW);
    }

    #[test]
    fn encoding_is_eight_bytes_per_instruction() {
        let p = x86_64();
        let bytes = encode(&p);
        assert_eq!(bytes.len(), p.len() * 8);
        assert_eq!(&bytes[..2], &LD_W_ABS.to_ne_bytes());
        assert_eq!(&bytes[4..8], &ARCH.to_ne_bytes());
    }
}
