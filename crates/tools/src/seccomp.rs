//! The seccomp program of the tool sandbox, in the form bubblewrap's `--seccomp FD` reads: a
//! raw array of classic BPF instructions (`struct sock_filter`, 8 bytes each, native endian).
//!
//! It is a deny-list on top of what bubblewrap already takes away (capabilities, new
//! privileges): system calls a build, a test run or an interpreter never needs and that are a
//! kernel's usual attack surface fail with EPERM (ptrace, mounts, modules, kexec, BPF, perf,
//! keyrings, io_uring, namespace creation and joining, other processes' memory, clock
//! setting, ...). `clone3` fails with ENOSYS, so the C library falls back to `clone`, whose
//! flags a filter can read: a `clone` or `unshare` asking for a new namespace fails. Calls of
//! another architecture (32-bit entry points) kill the process; on x86_64 the x32 ABI fails
//! with EPERM. Built for x86_64 and aarch64 (its numbers are the kernel's generic table, checked
//! against the kernel headers by the tests on any host); elsewhere there is no program and the
//! sandbox says it runs without this layer.

/// The program for the architecture this is built for; None where there is none.
pub(crate) fn program() -> Option<Vec<u8>> {
    let arch = if cfg!(target_arch = "x86_64") {
        &X86_64
    } else if cfg!(target_arch = "aarch64") {
        &AARCH64
    } else {
        return None;
    };
    Some(encode(&filter(arch)))
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

/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME.
const CLONE_NEW_ANY: u32 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000 | 0x80;

/// What the filter needs to know of an architecture.
struct Arch {
    /// `AUDIT_ARCH_*`, as `seccomp_data.arch` holds it.
    audit: u32,
    /// x86_64's x32 ABI: its calls have this bit set in their number.
    x32_bit: Option<u32>,
    /// The number of each call of [`DENIED`] here; None where the call does not exist.
    number: fn(&Denied) -> Option<u32>,
    clone: u32,
    unshare: u32,
    clone3: u32,
}

const X86_64: Arch = Arch {
    audit: 0xc000_003e,
    x32_bit: Some(0x4000_0000),
    number: |d| Some(d.x86_64),
    clone: 56,
    unshare: 272,
    clone3: 435,
};

const AARCH64: Arch =
    Arch { audit: 0xc000_00b7, x32_bit: None, number: |d| d.aarch64, clone: 220, unshare: 97, clone3: 435 };

/// A call that fails with EPERM, with its numbers.
struct Denied {
    /// The call's name in the kernel's tables (the tests look it up there).
    #[cfg_attr(not(test), allow(dead_code))]
    name: &'static str,
    x86_64: u32,
    aarch64: Option<u32>,
}

const fn denied(name: &'static str, x86_64: u32, aarch64: Option<u32>) -> Denied {
    Denied { name, x86_64, aarch64 }
}

const DENIED: &[Denied] = &[
    denied("ptrace", 101, Some(117)),
    denied("syslog", 103, Some(116)),
    denied("personality", 135, Some(92)),
    denied("vhangup", 153, Some(58)),
    denied("pivot_root", 155, Some(41)),
    denied("adjtimex", 159, Some(171)),
    denied("acct", 163, Some(89)),
    denied("settimeofday", 164, Some(170)),
    denied("mount", 165, Some(40)),
    denied("umount2", 166, Some(39)),
    denied("swapon", 167, Some(224)),
    denied("swapoff", 168, Some(225)),
    denied("reboot", 169, Some(142)),
    denied("iopl", 172, None),
    denied("ioperm", 173, None),
    denied("init_module", 175, Some(105)),
    denied("delete_module", 176, Some(106)),
    denied("quotactl", 179, Some(60)),
    denied("lookup_dcookie", 212, Some(18)),
    denied("clock_settime", 227, Some(112)),
    denied("kexec_load", 246, Some(104)),
    denied("add_key", 248, Some(217)),
    denied("request_key", 249, Some(218)),
    denied("keyctl", 250, Some(219)),
    denied("perf_event_open", 298, Some(241)),
    denied("name_to_handle_at", 303, Some(264)),
    denied("open_by_handle_at", 304, Some(265)),
    denied("setns", 308, Some(268)),
    denied("process_vm_readv", 310, Some(270)),
    denied("process_vm_writev", 311, Some(271)),
    denied("kcmp", 312, Some(272)),
    denied("finit_module", 313, Some(273)),
    denied("kexec_file_load", 320, Some(294)),
    denied("bpf", 321, Some(280)),
    denied("userfaultfd", 323, Some(282)),
    denied("io_uring_setup", 425, Some(425)),
    denied("io_uring_enter", 426, Some(426)),
    denied("io_uring_register", 427, Some(427)),
    denied("open_tree", 428, Some(428)),
    denied("move_mount", 429, Some(429)),
    denied("fsopen", 430, Some(430)),
    denied("fsconfig", 431, Some(431)),
    denied("fsmount", 432, Some(432)),
    denied("pidfd_getfd", 438, Some(438)),
    denied("mount_setattr", 442, Some(442)),
];

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

fn filter(arch: &Arch) -> Vec<Insn> {
    let mut p = vec![
        insn(LD_W_ABS, 0, 0, ARCH),
        insn(JEQ, 1, 0, arch.audit),
        insn(RET, 0, 0, KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, NR),
    ];
    if let Some(bit) = arch.x32_bit {
        p.push(insn(JGE, 0, 1, bit));
        p.push(insn(RET, 0, 0, ERRNO | EPERM));
    }
    for nr in DENIED.iter().filter_map(arch.number) {
        p.push(insn(JEQ, 0, 1, nr));
        p.push(insn(RET, 0, 0, ERRNO | EPERM));
    }
    p.push(insn(JEQ, 0, 1, arch.clone3));
    p.push(insn(RET, 0, 0, ERRNO | ENOSYS));
    for nr in [arch.clone, arch.unshare] {
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
        let p = filter(&X86_64);
        for d in DENIED {
            assert_eq!(eval(&p, X86_64.audit, d.x86_64, 0), ERRNO | EPERM, "{}", d.name);
        }
        for allowed in [0, 1, 2, 39, 57, 59, 61, 231] {
            // read, write, open, getpid, fork, execve, wait4, exit_group
            assert_eq!(eval(&p, X86_64.audit, allowed, 0), ALLOW, "syscall {allowed}");
        }
        assert_eq!(eval(&p, X86_64.audit, X86_64.clone3, 0), ERRNO | ENOSYS);
        assert_eq!(eval(&p, 0x4000_0003, 1, 0), KILL_PROCESS, "i386 entry points kill");
        assert_eq!(eval(&p, X86_64.audit, 0x4000_0000 | 1, 0), ERRNO | EPERM, "x32");
        assert_eq!(eval(&p, AARCH64.audit, 117, 0), KILL_PROCESS, "another architecture's calls kill");

        let p = filter(&AARCH64);
        for d in DENIED {
            if let Some(nr) = d.aarch64 {
                assert_eq!(eval(&p, AARCH64.audit, nr, 0), ERRNO | EPERM, "{}", d.name);
            }
        }
        for allowed in [63, 64, 56, 172, 221, 260, 94] {
            // read, write, openat, getpid, execve, wait4, exit_group
            assert_eq!(eval(&p, AARCH64.audit, allowed, 0), ALLOW, "syscall {allowed}");
        }
        assert_eq!(eval(&p, AARCH64.audit, AARCH64.clone3, 0), ERRNO | ENOSYS);
        assert_eq!(eval(&p, 0x4000_0028, 1, 0), KILL_PROCESS, "32-bit arm entry points kill");
        assert_eq!(eval(&p, X86_64.audit, 101, 0), KILL_PROCESS);
    }

    #[test]
    fn clone_and_unshare_may_not_create_namespaces() {
        for arch in [&X86_64, &AARCH64] {
            let p = filter(arch);
            // A thread (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD) and a fork.
            assert_eq!(eval(&p, arch.audit, arch.clone, 0x0001_0f00), ALLOW);
            assert_eq!(eval(&p, arch.audit, arch.clone, 0x11), ALLOW);
            for flag in [0x1000_0000, 0x2000_0000, 0x4000_0000, 0x0002_0000, 0x80] {
                assert_eq!(eval(&p, arch.audit, arch.clone, 0x11 | flag), ERRNO | EPERM, "clone {flag:#x}");
                assert_eq!(eval(&p, arch.audit, arch.unshare, flag), ERRNO | EPERM, "unshare {flag:#x}");
            }
            // unshare of the file table only is harmless.
            assert_eq!(eval(&p, arch.audit, arch.unshare, 0x400), ALLOW);
        }
    }

    /// `#define __NR_<name> <number>` lines of a kernel header (linux-libc-dev).
    fn kernel_numbers(header: &str) -> std::collections::HashMap<String, u32> {
        let text = std::fs::read_to_string(header)
            .unwrap_or_else(|e| panic!("{header}: {e}; install the kernel headers (apt-get install linux-libc-dev)"));
        text.lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                (words.next()? == "#define").then_some(())?;
                let name = words.next()?.strip_prefix("__NR_")?;
                Some((name.to_string(), words.next()?.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn every_number_is_the_kernels_for_its_architecture() {
        let x86 = kernel_numbers("/usr/include/x86_64-linux-gnu/asm/unistd_64.h");
        // aarch64 has no table of its own: it uses the generic one.
        let generic = kernel_numbers("/usr/include/asm-generic/unistd.h");
        for d in DENIED {
            assert_eq!(x86.get(d.name), Some(&d.x86_64), "x86_64 {}", d.name);
            assert_eq!(generic.get(d.name), d.aarch64.as_ref(), "aarch64 {}", d.name);
        }
        for (name, x86_64, aarch64) in [
            ("clone", X86_64.clone, AARCH64.clone),
            ("unshare", X86_64.unshare, AARCH64.unshare),
            ("clone3", X86_64.clone3, AARCH64.clone3),
        ] {
            assert_eq!(x86.get(name), Some(&x86_64), "x86_64 {name}");
            assert_eq!(generic.get(name), Some(&aarch64), "aarch64 {name}");
        }
    }

    #[test]
    fn encoding_is_eight_bytes_per_instruction() {
        let p = filter(&X86_64);
        let bytes = encode(&p);
        assert_eq!(bytes.len(), p.len() * 8);
        assert_eq!(&bytes[..2], &LD_W_ABS.to_ne_bytes());
        assert_eq!(&bytes[4..8], &ARCH.to_ne_bytes());
        if cfg!(target_arch = "x86_64") {
            assert_eq!(program(), Some(bytes), "this host's program is the x86_64 one");
        }
    }
}
