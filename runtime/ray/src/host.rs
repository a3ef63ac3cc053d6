//! Finds the host runtime's function table and wraps its calls in safe Rust.
//!
//! A compiled program links the runtime and gets the table directly. A REPL cell
//! library has no runtime of its own: it looks the table up by symbol in the process
//! that loaded it (the REPL or a worker), which exports it on purpose.

use ray_abi::{ABI_VERSION, HostBuf, HostTable, RayError, STATUS_OK, Slice};
use std::sync::OnceLock;

static TABLE: OnceLock<Result<&'static HostTable, RayError>> = OnceLock::new();

#[cfg(feature = "runtime")]
fn locate() -> Result<&'static HostTable, RayError> {
    Ok(ray_runtime::host_table())
}

#[cfg(not(feature = "runtime"))]
fn locate() -> Result<&'static HostTable, RayError> {
    let name = std::ffi::CString::new(ray_abi::HOST_TABLE_SYMBOL).expect("symbol has no NUL");
    // SAFETY: dlsym with RTLD_DEFAULT only reads the loaded objects' symbol tables;
    // `name` is a valid NUL-terminated string.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if sym.is_null() {
        return Err(RayError::Startup(format!(
            "this process exports no `{}`: load ray cells only in rayrepl or a ray worker",
            ray_abi::HOST_TABLE_SYMBOL
        )));
    }
    // SAFETY: the host exports the symbol as a `static HostTable` that lives for the
    // whole process; the symbol's address is the table's address.
    Ok(unsafe { &*(sym as *const HostTable) })
}

/// The host's table, checked for ABI compatibility.
pub(crate) fn table() -> Result<&'static HostTable, RayError> {
    TABLE
        .get_or_init(|| {
            let t = locate()?;
            if t.abi_version != ABI_VERSION {
                return Err(RayError::Startup(format!(
                    "the host runtime speaks ABI {} but this `ray` crate speaks {ABI_VERSION}; \
                     rebuild against the same rayrepl version",
                    t.abi_version
                )));
            }
            Ok(t)
        })
        .clone()
}

/// Bytes lent by the host; released on drop.
pub(crate) struct Lent {
    buf: HostBuf,
    table: &'static HostTable,
}

impl Lent {
    pub(crate) fn new(table: &'static HostTable, buf: HostBuf) -> Self {
        Lent { buf, table }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        if self.buf.len == 0 {
            return &[];
        }
        // SAFETY: the host guarantees ptr/len stay valid until `release(handle)`,
        // which happens only when `self` drops.
        unsafe { std::slice::from_raw_parts(self.buf.ptr, self.buf.len) }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if self.buf.handle != 0 {
            // SAFETY: the handle came from this table and is released exactly once.
            unsafe { (self.table.release)(self.buf.handle) }
        }
    }
}

/// Turns a status code and error buffer into a `Result`.
pub(crate) fn check(table: &'static HostTable, status: i32, err: HostBuf) -> Result<(), RayError> {
    if status == STATUS_OK {
        return Ok(());
    }
    let lent = Lent::new(table, err);
    Err(RayError::from_bytes(lent.bytes()))
}

/// Borrows a list of byte slices for a table call.
pub(crate) fn slices(parts: &[&[u8]]) -> Vec<Slice> {
    parts.iter().map(|p| Slice::of(p)).collect()
}
