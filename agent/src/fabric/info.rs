//! `fi_getinfo`: the query, and copying its answer into owned values.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr;

use rayefa_libfabric_sys as sys;
use rayefa_wire::{EndpointType, FabricEntry, FabricLink, FabricNic, FabricQuery, LinkState};

use super::FabricError;
use super::library::Libfabric;

/// Large enough for every capability name libfabric knows, joined.
const TOSTR_BUFFER: usize = 4096;

/// A list of `struct fi_info` owned by libfabric, freed with `fi_freeinfo` when dropped.
pub(super) struct InfoList<'lib> {
    pub(super) head: *mut sys::fi_info,
    pub(super) lib: &'lib Libfabric,
}

impl Drop for InfoList<'_> {
    fn drop(&mut self) {
        if !self.head.is_null() {
            // SAFETY: `head` came from this library's fi_dupinfo or fi_getinfo, is freed only
            // here, and nothing borrowed from it outlives the list.
            unsafe { (self.lib.fns.freeinfo)(self.head) };
        }
    }
}

impl Libfabric {
    /// The API version to ask for: the bindings' own, or the library's if it is older (asking
    /// an older library for a newer version answers -FI_ENOSYS).
    pub(crate) fn api_version(&self) -> u32 {
        sys::HEADER_API_VERSION.min(self.version())
    }

    /// `fi_getinfo` with the permissive hints `fi_info` uses, filtered as `query` says, every
    /// entry copied out.
    pub(crate) fn getinfo(&self, query: &FabricQuery) -> Result<Vec<FabricEntry>, FabricError> {
        let list = self.getinfo_list(self.hints(query)?, None, query.provider.clone())?;
        let mut entries = Vec::new();
        let mut node = list.head.cast_const();
        while !node.is_null() {
            // SAFETY: `node` is an element of the list fi_getinfo returned, which `list` keeps
            // alive until after this loop; libfabric does not touch it meanwhile.
            let info = unsafe { &*node };
            entries.push(self.entry(info));
            node = info.next.cast_const();
        }
        Ok(entries)
    }

    /// `fi_getinfo` with `hints` (freed here) and, when given, `node`: a local address to open
    /// on (FI_SOURCE). Nothing found is [`FabricError::NoProvider`] naming `provider`.
    pub(super) fn getinfo_list<'lib>(
        &'lib self,
        hints: InfoList<'lib>,
        node: Option<&CStr>,
        provider: Option<String>,
    ) -> Result<InfoList<'lib>, FabricError> {
        let mut found: *mut sys::fi_info = ptr::null_mut();
        // SAFETY: `hints` is a complete fi_info from this library's fi_dupinfo; `node` is NULL
        // or NUL-terminated, the service NULL; `found` is a valid place for the result list.
        let rc = unsafe {
            (self.fns.getinfo)(
                self.api_version(),
                node.map_or(ptr::null(), CStr::as_ptr),
                ptr::null(),
                if node.is_some() { sys::FI_SOURCE } else { 0 },
                hints.head,
                &mut found,
            )
        };
        let list = InfoList {
            head: found,
            lib: self,
        };
        drop(hints);
        if rc == -(sys::FI_ENODATA as c_int) || (rc == 0 && list.head.is_null()) {
            return Err(FabricError::NoProvider {
                provider,
                text: self.strerror(sys::FI_ENODATA as c_int),
            });
        }
        if rc != 0 {
            return Err(self.call_error("fi_getinfo", rc as isize));
        }
        Ok(list)
    }

    /// `fi_allocinfo()` with `fi_info`'s permissive hints: every mode bit accepted, every
    /// memory-registration mode except the two deprecated ones. With zeroed hints some
    /// providers leave out entries a working node has.
    pub(super) fn hints(&self, query: &FabricQuery) -> Result<InfoList<'_>, FabricError> {
        // SAFETY: fi_dupinfo(NULL) is fi_allocinfo: a new fi_info with every attribute
        // structure allocated, owned by the caller.
        let head = unsafe { (self.fns.dupinfo)(ptr::null()) };
        let hints = InfoList { head, lib: self };
        // SAFETY: a non-null result of fi_allocinfo has its attribute pointers set; nothing
        // else refers to it yet.
        let (info, domain, fabric, endpoint) = unsafe {
            let info = hints
                .head
                .as_mut()
                .ok_or(FabricError::OutOfMemory("fi_allocinfo"))?;
            let domain = info.domain_attr.as_mut();
            let fabric = info.fabric_attr.as_mut();
            let endpoint = info.ep_attr.as_mut();
            (info, domain, fabric, endpoint)
        };
        let (Some(domain), Some(fabric), Some(endpoint)) = (domain, fabric, endpoint) else {
            return Err(FabricError::OutOfMemory("fi_allocinfo"));
        };
        info.mode = !0;
        domain.mode = !0;
        domain.mr_mode =
            !((sys::fi_mr_mode::FI_MR_BASIC | sys::fi_mr_mode::FI_MR_SCALABLE) as c_int);
        if let Some(provider) = &query.provider {
            let name = CString::new(provider.as_str()).map_err(|_| FabricError::Call {
                function: "fi_getinfo",
                code: -(sys::FI_EINVAL as c_int),
                text: "the provider name contains a NUL byte".to_owned(),
            })?;
            // SAFETY: strdup copies the NUL-terminated name into C-allocated memory, which
            // fi_freeinfo releases with free() together with the hints.
            let copy = unsafe { libc::strdup(name.as_ptr()) };
            if copy.is_null() {
                return Err(FabricError::OutOfMemory("strdup"));
            }
            fabric.prov_name = copy;
        }
        if let Some(kind) = query.endpoint_type {
            endpoint.type_ = endpoint_type_value(kind);
        }
        Ok(hints)
    }

    fn entry(&self, info: &sys::fi_info) -> FabricEntry {
        // SAFETY: attribute pointers of a returned entry are NULL or point to structures that
        // live as long as the list, which outlives this call (so for the three below too).
        let fabric = unsafe { info.fabric_attr.as_ref() };
        // SAFETY: as above.
        let domain = unsafe { info.domain_attr.as_ref() };
        // SAFETY: as above.
        let endpoint = unsafe { info.ep_attr.as_ref() };
        // SAFETY: as above.
        let nic = unsafe { info.nic.as_ref() };
        let protocol = endpoint.map_or(0, |e| e.protocol);
        FabricEntry {
            provider: fabric.and_then(|f| string(f.prov_name)).unwrap_or_default(),
            provider_version: fabric.map_or_else(String::new, |f| {
                format!(
                    "{}.{}",
                    sys::FI_MAJOR(f.prov_version),
                    sys::FI_MINOR(f.prov_version)
                )
            }),
            fabric: fabric.and_then(|f| string(f.name)).unwrap_or_default(),
            domain: domain.and_then(|d| string(d.name)).unwrap_or_default(),
            endpoint_type: endpoint.map_or(EndpointType::Unspec, |e| endpoint_type(e.type_)),
            protocol: self.tostr(&protocol, sys::fi_type::FI_TYPE_PROTOCOL),
            address_format: self.tostr(&info.addr_format, sys::fi_type::FI_TYPE_ADDR_FORMAT),
            capabilities: flag_names(&self.tostr(&info.caps, sys::fi_type::FI_TYPE_CAPS)),
            nic: nic.map(nic_of),
        }
    }

    /// `fi_tostr_r`: libfabric's own name for a value (`FI_PROTO_RXM`, `FI_MSG, FI_RMA`), so
    /// that values newer than the bindings are still named.
    fn tostr<T>(&self, value: &T, kind: sys::fi_type::Type) -> String {
        let mut buffer = [0u8; TOSTR_BUFFER];
        // SAFETY: `value` points to a live value of the C type `kind` names (the callers pair
        // u64 with CAPS and u32 with PROTOCOL and ADDR_FORMAT, as the headers declare those
        // fields); fi_tostr_r writes at most `len` bytes, NUL included, into `buffer`.
        unsafe {
            (self.fns.tostr_r)(
                buffer.as_mut_ptr().cast::<c_char>(),
                buffer.len(),
                ptr::from_ref(value).cast::<c_void>(),
                kind,
            )
        };
        CStr::from_bytes_until_nul(&buffer)
            .map(|text| text.to_string_lossy().trim().to_owned())
            .unwrap_or_default()
    }
}

/// The NIC of an entry, every attribute optional.
fn nic_of(nic: &sys::fid_nic) -> FabricNic {
    // SAFETY: attributes of a returned entry's NIC are NULL or live as long as the list (so
    // for the two below too).
    let device = unsafe { nic.device_attr.as_ref() };
    // SAFETY: as above.
    let bus = unsafe { nic.bus_attr.as_ref() };
    // SAFETY: as above.
    let link = unsafe { nic.link_attr.as_ref() };
    FabricNic {
        device: device.and_then(|d| string(d.name)),
        vendor_id: device.and_then(|d| string(d.vendor_id)),
        device_id: device.and_then(|d| string(d.device_id)),
        driver: device.and_then(|d| string(d.driver)),
        firmware: device.and_then(|d| string(d.firmware)),
        pci_address: bus.and_then(pci_address),
        link: link.map(|l| FabricLink {
            state: match l.state {
                sys::fi_link_state::FI_LINK_UP => LinkState::Up,
                sys::fi_link_state::FI_LINK_DOWN => LinkState::Down,
                _ => LinkState::Unknown,
            },
            speed_bps: u64::try_from(l.speed).unwrap_or(u64::MAX),
            mtu: u64::try_from(l.mtu).unwrap_or(u64::MAX),
            address: string(l.address),
            network_type: string(l.network_type),
        }),
    }
}

/// `dddd:bb:dd.f` for a device on PCI.
fn pci_address(bus: &sys::fi_bus_attr) -> Option<String> {
    if bus.bus_type != sys::fi_bus_type::FI_BUS_PCI {
        return None;
    }
    // SAFETY: `bus_type` says the union holds its `pci` member; every bit pattern of its
    // plain integer fields is valid.
    let pci = unsafe { bus.attr.pci };
    Some(format!(
        "{:04x}:{:02x}:{:02x}.{:x}",
        pci.domain_id, pci.bus_id, pci.device_id, pci.function_id
    ))
}

/// A C string of an entry, copied; `None` for NULL or empty.
pub(super) fn string(text: *const c_char) -> Option<String> {
    if text.is_null() {
        return None;
    }
    // SAFETY: libfabric's strings in a returned entry are NUL-terminated and live as long as
    // the list, which outlives this copy.
    let text = unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned();
    (!text.is_empty()).then_some(text)
}

/// Flag names out of fi_tostr's list (`FI_MSG, FI_RMA` in 1.x; `|` in some versions).
fn flag_names(list: &str) -> Vec<String> {
    list.split([',', '|'])
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

fn endpoint_type(value: sys::fi_ep_type::Type) -> EndpointType {
    use sys::fi_ep_type as ep;
    match value {
        ep::FI_EP_UNSPEC => EndpointType::Unspec,
        ep::FI_EP_MSG => EndpointType::Msg,
        ep::FI_EP_DGRAM => EndpointType::Dgram,
        ep::FI_EP_RDM => EndpointType::Rdm,
        ep::FI_EP_SOCK_STREAM => EndpointType::SockStream,
        ep::FI_EP_SOCK_DGRAM => EndpointType::SockDgram,
        _ => EndpointType::Other,
    }
}

pub(super) fn endpoint_type_value(kind: EndpointType) -> sys::fi_ep_type::Type {
    use sys::fi_ep_type as ep;
    match kind {
        EndpointType::Msg => ep::FI_EP_MSG,
        EndpointType::Dgram => ep::FI_EP_DGRAM,
        EndpointType::Rdm => ep::FI_EP_RDM,
        EndpointType::SockStream => ep::FI_EP_SOCK_STREAM,
        EndpointType::SockDgram => ep::FI_EP_SOCK_DGRAM,
        EndpointType::Unspec | EndpointType::Other => ep::FI_EP_UNSPEC,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_lists_split_in_either_style() {
        assert_eq!(
            flag_names("FI_MSG, FI_RMA, FI_TAGGED"),
            ["FI_MSG", "FI_RMA", "FI_TAGGED"]
        );
        assert_eq!(flag_names("FI_MSG | FI_RMA"), ["FI_MSG", "FI_RMA"]);
        assert!(flag_names("").is_empty());
    }

    #[test]
    fn endpoint_types_round_trip_through_the_header_values() {
        for kind in [
            EndpointType::Msg,
            EndpointType::Dgram,
            EndpointType::Rdm,
            EndpointType::SockStream,
            EndpointType::SockDgram,
        ] {
            assert_eq!(endpoint_type(endpoint_type_value(kind)), kind);
        }
        assert_eq!(endpoint_type(99), EndpointType::Other);
    }
}
