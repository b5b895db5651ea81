//! A check of a shared library's ELF structure before it is loaded. The dynamic loader maps a
//! library's segments straight from the file; a truncated file (a copy cut short, a build that was
//! interrupted) makes it map pages past the end of the file, and the first access kills the
//! process with SIGBUS, before any error can be reported. Checking that the ELF header, the
//! program and section header tables, every segment and every section lie inside the file turns
//! that into an ordinary rejection.
use std::{io::Read, path::Path};

/// Why a file is not a loadable shared library, in one line.
pub type ElfError = String;

const PT_LOAD: u64 = 1;
const SHT_NOBITS: u64 = 8;

struct Reader<'a> {
    data: &'a [u8],
    little: bool,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&self, at: u64) -> Option<[u8; N]> {
        let at = usize::try_from(at).ok()?;
        self.data.get(at..at.checked_add(N)?)?.try_into().ok()
    }
    fn u16(&self, at: u64) -> Option<u64> {
        let b = self.bytes::<2>(at)?;
        Some(if self.little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        } as u64)
    }
    fn u32(&self, at: u64) -> Option<u64> {
        let b = self.bytes::<4>(at)?;
        Some(if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as u64)
    }
    fn u64(&self, at: u64) -> Option<u64> {
        let b = self.bytes::<8>(at)?;
        Some(if self.little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    }
}

/// Offsets of the fields this check reads, for 32- and 64-bit ELF files.
struct Fields {
    phoff: u64,
    shoff: u64,
    phentsize: u64,
    phnum: u64,
    shentsize: u64,
    shnum: u64,
    /// Within a program header: type, offset, file size.
    ph: (u64, u64, u64),
    /// Within a section header: type, offset, size.
    sh: (u64, u64, u64),
    wide: bool,
}

const ELF32: Fields = Fields {
    phoff: 28,
    shoff: 32,
    phentsize: 42,
    phnum: 44,
    shentsize: 46,
    shnum: 48,
    ph: (0, 4, 16),
    sh: (4, 16, 20),
    wide: false,
};

const ELF64: Fields = Fields {
    phoff: 32,
    shoff: 40,
    phentsize: 54,
    phnum: 56,
    shentsize: 58,
    shnum: 60,
    ph: (0, 8, 32),
    sh: (4, 24, 32),
    wide: true,
};

/// Checks the file at `path`. Files that are not ELF (a Mach-O `.dylib`) pass: the platform's
/// loader says what is wrong with them.
pub fn check_file(path: &Path) -> Result<(), ElfError> {
    let mut magic = [0u8; 4];
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("the file cannot be read: {e}"))?;
    let n = file
        .read(&mut magic)
        .map_err(|e| format!("the file cannot be read: {e}"))?;
    if n < 4 || magic != *b"\x7fELF" {
        if cfg!(target_os = "linux") {
            return Err(if n == 0 {
                "the file is empty, not a shared library".to_string()
            } else {
                "the file is not a shared library (no ELF header)".to_string()
            });
        }
        return Ok(());
    }
    let data = std::fs::read(path).map_err(|e| format!("the file cannot be read: {e}"))?;
    check(&data)
}

/// Checks an ELF image held in memory.
pub fn check(data: &[u8]) -> Result<(), ElfError> {
    let len = data.len() as u64;
    let truncated = |what: String| {
        format!("the file is truncated or damaged: {what} lies past the end of the file ({len} bytes); copy or rebuild it")
    };
    if data.get(0..4) != Some(b"\x7fELF") {
        return Err("the file is not a shared library (no ELF header)".into());
    }
    let f = match data.get(4) {
        Some(1) => &ELF32,
        Some(2) => &ELF64,
        _ => return Err("the file has an unknown ELF class".into()),
    };
    let r = Reader {
        data,
        little: match data.get(5) {
            Some(1) => true,
            Some(2) => false,
            _ => return Err("the file has an unknown ELF byte order".into()),
        },
    };
    let word = |at: u64| if f.wide { r.u64(at) } else { r.u32(at) };
    let header = || truncated("the ELF header".into());
    let phoff = word(f.phoff).ok_or_else(header)?;
    let shoff = word(f.shoff).ok_or_else(header)?;
    let phentsize = r.u16(f.phentsize).ok_or_else(header)?;
    let phnum = r.u16(f.phnum).ok_or_else(header)?;
    let shentsize = r.u16(f.shentsize).ok_or_else(header)?;
    let shnum = r.u16(f.shnum).ok_or_else(header)?;
    let inside = |offset: u64, size: u64| offset.checked_add(size).is_some_and(|end| end <= len);
    let table = |off: u64, entsize: u64, num: u64, what: &str| -> Result<(), ElfError> {
        if num > 0 && !inside(off, entsize.saturating_mul(num)) {
            return Err(truncated(format!("the {what} header table")));
        }
        Ok(())
    };
    if phnum == 0 {
        return Err("the file has no program headers: not a loadable shared library".into());
    }
    table(phoff, phentsize, phnum, "program")?;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let ty = r.u32(at + f.ph.0).ok_or_else(header)?;
        let offset = word(at + f.ph.1).ok_or_else(header)?;
        let size = word(at + f.ph.2).ok_or_else(header)?;
        if ty == PT_LOAD && !inside(offset, size) {
            return Err(truncated(format!(
                "segment {i} (bytes {offset}..{})",
                offset.saturating_add(size)
            )));
        }
    }
    table(shoff, shentsize, shnum, "section")?;
    for i in 0..shnum {
        let at = shoff + i * shentsize;
        let ty = r.u32(at + f.sh.0).ok_or_else(header)?;
        let offset = word(at + f.sh.1).ok_or_else(header)?;
        let size = word(at + f.sh.2).ok_or_else(header)?;
        if ty != SHT_NOBITS && ty != 0 && !inside(offset, size) {
            return Err(truncated(format!(
                "section {i} (bytes {offset}..{})",
                offset.saturating_add(size)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary is an ELF file with segments and sections spread over all of it.
    fn own_binary() -> Vec<u8> {
        let exe = std::env::current_exe().expect("current exe");
        std::fs::read(exe).expect("read own binary")
    }

    #[test]
    fn a_whole_library_passes() {
        check(&own_binary()).expect("intact ELF");
    }

    #[test]
    fn every_truncation_is_refused() {
        let data = own_binary();
        for cut in [
            0,
            3,
            10,
            40,
            63,
            64,
            500,
            data.len() / 3,
            data.len() / 2,
            data.len() - 1,
        ] {
            let err = check(&data[..cut]).expect_err(&format!("cut at {cut}"));
            assert!(
                err.contains("truncated") || err.contains("no ELF header"),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn other_files_are_refused() {
        assert!(check(b"not an elf file")
            .expect_err("text")
            .contains("no ELF header"));
        let mut bad_class = own_binary();
        bad_class[4] = 9;
        assert!(check(&bad_class).expect_err("class").contains("ELF class"));
    }
}
