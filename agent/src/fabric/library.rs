//! Opening libfabric and resolving its functions at the symbol versions of the bindings.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};

use rayefa_libfabric_sys as sys;
use sys::symbols;

use super::{FabricError, LoadAttempt};

/// Where libfabric is looked for when no path is given, in order: the EFA installer's copy
/// (RPM distributions, then Debian and Ubuntu), then whatever the dynamic loader finds.
const SEARCH_ORDER: [&str; 3] = [
    "/opt/amazon/efa/lib64/libfabric.so.1",
    "/opt/amazon/efa/lib/libfabric.so.1",
    "libfabric.so.1",
];

/// The function type inside one of bindgen's `Option<unsafe extern "C" fn ...>` pointer types.
pub(super) trait FnPointer {
    type Fn: Copy;
}

impl<F: Copy> FnPointer for Option<F> {
    type Fn = F;
}

pub(super) type Fn<T> = <T as FnPointer>::Fn;

/// The functions the probe and the ping-pong call, each at the version whose structures the bindings describe.
#[derive(Clone, Copy)]
pub(super) struct Functions {
    pub(super) version: Fn<sys::fi_version_fn>,
    pub(super) getinfo: Fn<sys::fi_getinfo_fn>,
    pub(super) freeinfo: Fn<sys::fi_freeinfo_fn>,
    pub(super) dupinfo: Fn<sys::fi_dupinfo_fn>,
    pub(super) strerror: Fn<sys::fi_strerror_fn>,
    pub(super) tostr_r: Fn<sys::fi_tostr_r_fn>,
    pub(super) fabric: Fn<sys::fi_fabric_fn>,
}

/// A loaded libfabric.
///
/// The library is never closed: libfabric initialises its providers once per process and some
/// of them start threads or register handlers that outlive any one call, so unloading it could
/// pull code out from under them. The probe runs in a short-lived process for that reason.
pub(crate) struct Libfabric {
    /// The path the dynamic loader reports for the loaded object.
    path: String,
    /// That path with every symbolic link resolved, when it can be.
    file: Option<PathBuf>,
    pub(super) fns: Functions,
}

impl std::fmt::Debug for Libfabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Libfabric")
            .field("path", &self.path)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Libfabric {
    /// Opens `explicit` if given (and nothing else), otherwise the first of [`SEARCH_ORDER`]
    /// that loads.
    pub(crate) fn load(explicit: Option<&Path>) -> Result<Self, FabricError> {
        let candidates: Vec<String> = match explicit {
            Some(path) => vec![path.display().to_string()],
            None => SEARCH_ORDER.iter().map(|p| (*p).to_owned()).collect(),
        };
        let mut tried = Vec::new();
        for candidate in candidates {
            match open(&candidate) {
                Ok(handle) => return Self::resolve(handle, &candidate),
                Err(reason) => tried.push(LoadAttempt {
                    path: candidate,
                    reason,
                }),
            }
        }
        Err(FabricError::NotFound { tried })
    }

    fn resolve(handle: *mut c_void, opened: &str) -> Result<Self, FabricError> {
        let fns = Functions {
            version: symbol(handle, opened, symbols::FI_VERSION)?,
            getinfo: symbol(handle, opened, symbols::FI_GETINFO)?,
            freeinfo: symbol(handle, opened, symbols::FI_FREEINFO)?,
            dupinfo: symbol(handle, opened, symbols::FI_DUPINFO)?,
            strerror: symbol(handle, opened, symbols::FI_STRERROR)?,
            tostr_r: symbol(handle, opened, symbols::FI_TOSTR_R)?,
            fabric: symbol(handle, opened, symbols::FI_FABRIC)?,
        };
        let path = loaded_path(fns.version as *const c_void).unwrap_or_else(|| opened.to_owned());
        let file = std::fs::canonicalize(&path).ok();
        Ok(Self { path, file, fns })
    }

    /// The path the dynamic loader reports for the library.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The file behind [`Libfabric::path`], symbolic links resolved.
    pub(crate) fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// `fi_version()`: the newest API version the library implements.
    pub(crate) fn version(&self) -> u32 {
        // SAFETY: `fi_version@FABRIC_1.0` takes nothing and returns a number; the library
        // stays loaded for the life of the process.
        unsafe { (self.fns.version)() }
    }

    /// `fi_strerror(errnum)`: libfabric's text for a (positive) fi_errno.
    pub(crate) fn strerror(&self, errnum: c_int) -> String {
        // SAFETY: `fi_strerror` accepts any integer and returns a pointer to a static string
        // (or NULL on some builds for numbers it does not know), never one to be freed.
        let text = unsafe { (self.fns.strerror)(errnum) };
        if text.is_null() {
            return format!("error {errnum}");
        }
        // SAFETY: non-null, NUL-terminated, static: checked and documented above.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }
}

/// `dlopen(path, RTLD_NOW | RTLD_LOCAL)`; the loader's message on failure.
fn open(path: &str) -> Result<*mut c_void, String> {
    let c_path = CString::new(path).map_err(|_| "the path contains a NUL byte".to_owned())?;
    // SAFETY: `c_path` is a valid NUL-terminated string for the duration of the call. Loading
    // runs libfabric's constructors, which only set up its own state.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        Err(last_dl_error().unwrap_or_else(|| "dlopen failed without a reason".to_owned()))
    } else {
        Ok(handle)
    }
}

/// Resolves `sym` with `dlvsym` and gives it the function type `F` that bindgen generated for
/// it from the headers.
fn symbol<F: Copy>(handle: *mut c_void, library: &str, sym: sys::Symbol) -> Result<F, FabricError> {
    const {
        assert!(size_of::<F>() == size_of::<*mut c_void>());
    }
    // SAFETY: `handle` came from a successful dlopen and is never closed; both strings are
    // static and NUL-terminated.
    let address = unsafe { libc::dlvsym(handle, sym.name.as_ptr(), sym.version.as_ptr()) };
    if address.is_null() {
        return Err(FabricError::SymbolMissing {
            library: library.to_owned(),
            symbol: sym.name.to_string_lossy().into_owned(),
            version: sym.version.to_string_lossy().into_owned(),
            reason: last_dl_error().unwrap_or_else(|| "not exported".to_owned()),
        });
    }
    // SAFETY: `F` is one of the `fi_*_fn` pointer types generated from the declaration of
    // this very function in the headers whose ABI `sym.version` names, so the address has
    // that signature; it is non-null, and `F` is exactly pointer-sized (asserted above).
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&address) })
}

/// The file name the dynamic loader recorded for the object that contains `address`.
fn loaded_path(address: *const c_void) -> Option<String> {
    let mut info = libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    // SAFETY: `info` is a valid, writable Dl_info; `address` is a function of a loaded object.
    let found = unsafe { libc::dladdr(address, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr set `dli_fname` to the loader's NUL-terminated name of the object, which
    // lives as long as the object stays loaded (for ever here).
    Some(
        unsafe { CStr::from_ptr(info.dli_fname) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// `dlerror()`, copied.
fn last_dl_error() -> Option<String> {
    // SAFETY: dlerror returns NULL or a NUL-terminated message that stays valid until the next
    // dl* call on this thread; it is copied at once.
    let message: *const c_char = unsafe { libc::dlerror() };
    if message.is_null() {
        None
    } else {
        // SAFETY: non-null and NUL-terminated, as above.
        Some(
            unsafe { CStr::from_ptr(message) }
                .to_string_lossy()
                .into_owned(),
        )
    }
}
