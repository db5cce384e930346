//! A reliable-datagram endpoint and everything it stands on: fabric, domain, address vector,
//! one completion queue for both directions, and two message buffers (registered when the
//! provider asks for `FI_MR_LOCAL`).
//!
//! libfabric's data path is made of static inline functions in its headers (`fi_domain`,
//! `fi_endpoint`, `fi_send`, `fi_cq_read`, ...) that call through each object's table of
//! operations. This module makes the same calls through the same tables, so only `fi_fabric`
//! (and the discovery functions) are resolved from the library.

use std::ffi::{CString, c_int, c_void};
use std::ptr;
use std::time::{Duration, Instant};

use rayefa_libfabric_sys as sys;
use rayefa_wire::{EndpointType, FabricEndpoint, FabricQuery};

use super::FabricError;
use super::info::{InfoList, string};
use super::library::Libfabric;

/// Completions read from the queue at a time.
const CQ_BATCH: usize = 8;

/// How long a wait polls the queue without pause before it starts sleeping between polls:
/// long enough that a ping-pong in progress never sleeps, short enough that an idle listener
/// does not hold a core.
const SPIN: Duration = Duration::from_millis(50);

/// The pause between polls of an idle queue.
const IDLE_POLL: Duration = Duration::from_micros(500);

/// The memory-registration modes the endpoint handles: it registers its buffers when asked
/// (`FI_MR_LOCAL`), and registers only memory it allocated, with the provider's keys and
/// virtual addresses, which is all the others ask of an application that only sends.
const MR_MODES: u32 =
    sys::FI_MR_LOCAL | sys::FI_MR_VIRT_ADDR | sys::FI_MR_ALLOCATED | sys::FI_MR_PROV_KEY;

/// One of the endpoint's two message buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Buffer {
    First = 0,
    Second = 1,
}

impl Buffer {
    /// The other buffer.
    pub(crate) fn other(self) -> Self {
        match self {
            Buffer::First => Buffer::Second,
            Buffer::Second => Buffer::First,
        }
    }
}

/// A peer in the endpoint's address vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer(sys::fi_addr_t);

/// A completed operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Completion {
    /// The send from this buffer is done: the buffer may be reused.
    Sent(Buffer),
    /// A message of this many bytes arrived in this buffer.
    Received(Buffer, usize),
}

/// A message buffer and its registration.
struct Region {
    bytes: Vec<u8>,
    /// The registration, when the provider wants one (`FI_MR_LOCAL`).
    mr: *mut sys::fid_mr,
}

/// An enabled RDM endpoint. Closing it (on drop) closes everything it stands on, in order.
pub(crate) struct Endpoint<'lib> {
    lib: &'lib Libfabric,
    /// fi_getinfo's answer, which `chosen` points into: freed (on drop) after the objects
    /// opened from it are closed.
    _entries: InfoList<'lib>,
    /// The entry the endpoint was opened from.
    chosen: *mut sys::fi_info,
    fabric: *mut sys::fid_fabric,
    domain: *mut sys::fid_domain,
    cq: *mut sys::fid_cq,
    av: *mut sys::fid_av,
    ep: *mut sys::fid_ep,
    regions: [Region; 2],
    /// One operation context per buffer (`FI_CONTEXT2` mode): libfabric may write into it
    /// while the operation is pending, so each lives in its own heap allocation that does not
    /// move. At most one operation per buffer is in flight.
    contexts: [Box<sys::fi_context2>; 2],
    /// Whether an operation on each buffer is in flight (its context in libfabric's hands).
    pending: [bool; 2],
    describe: FabricEndpoint,
    max_message: usize,
}

impl std::fmt::Debug for Endpoint<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("endpoint", &self.describe)
            .field("max_message", &self.max_message)
            .finish_non_exhaustive()
    }
}

/// The function in an operations table's slot, or the error of a provider without it.
fn op<F>(slot: Option<F>, name: &'static str) -> Result<F, FabricError> {
    slot.ok_or(FabricError::Unsupported(name))
}

impl<'lib> Endpoint<'lib> {
    /// Opens an RDM endpoint of `provider` whose buffers hold `buffer_size` bytes (cut to the
    /// provider's largest message), on the interface of the `source` address when given (the
    /// provider's first otherwise). Among the provider's RDM entries, the one with the largest
    /// messages wins (libfabric 2's `efa-direct` caps send and receive at the MTU, `efa` does
    /// not).
    pub(crate) fn open(
        lib: &'lib Libfabric,
        provider: &str,
        source: Option<&str>,
        buffer_size: usize,
    ) -> Result<Self, FabricError> {
        let info = lib.rdm_info(provider, source)?;
        let chosen = largest_messages(&info);
        // SAFETY: `chosen` is an entry of the list `info` owns, which stays alive (and
        // unchanged) as long as the endpoint.
        let entry = unsafe { &*chosen };
        // SAFETY: attribute pointers of a returned entry are NULL or live as long as the list.
        let (fabric_attr, domain_attr, ep_attr) = unsafe {
            (
                entry.fabric_attr.as_ref(),
                entry.domain_attr.as_ref(),
                entry.ep_attr.as_ref(),
            )
        };
        let (Some(fabric_attr), Some(domain_attr)) = (fabric_attr, domain_attr) else {
            return Err(FabricError::Unsupported(
                "an entry without fabric attributes",
            ));
        };
        let max_message = ep_attr.map_or(usize::MAX, |a| a.max_msg_size);
        let size = buffer_size.min(max_message).max(1);
        let describe = FabricEndpoint {
            provider: string(fabric_attr.prov_name).unwrap_or_default(),
            fabric: string(fabric_attr.name).unwrap_or_default(),
            domain: string(domain_attr.name).unwrap_or_default(),
        };
        let mut endpoint = Self {
            lib,
            _entries: info,
            chosen,
            fabric: ptr::null_mut(),
            domain: ptr::null_mut(),
            cq: ptr::null_mut(),
            av: ptr::null_mut(),
            ep: ptr::null_mut(),
            regions: [
                Region {
                    bytes: vec![0; size],
                    mr: ptr::null_mut(),
                },
                Region {
                    bytes: vec![0; size],
                    mr: ptr::null_mut(),
                },
            ],
            contexts: [Box::new(empty_context()), Box::new(empty_context())],
            pending: [false; 2],
            describe,
            max_message: size,
        };
        // Each step stores its object before the next can fail, so Drop closes what exists.
        endpoint.open_objects(fabric_attr, domain_attr)?;
        Ok(endpoint)
    }

    fn open_objects(
        &mut self,
        fabric_attr: &sys::fi_fabric_attr,
        domain_attr: &sys::fi_domain_attr,
    ) -> Result<(), FabricError> {
        let lib = self.lib;
        // SAFETY: `fabric_attr` belongs to a live entry of fi_getinfo's answer; fi_fabric
        // reads it and stores the new fabric in `self.fabric`.
        let rc = unsafe {
            (lib.fns.fabric)(
                ptr::from_ref(fabric_attr).cast_mut(),
                &mut self.fabric,
                ptr::null_mut(),
            )
        };
        self.check("fi_fabric", rc)?;
        // SAFETY: fi_fabric succeeded, so `fabric` points to a live fabric with its table.
        let fabric_ops = unsafe { &*(*self.fabric).ops };
        let domain = op(fabric_ops.domain, "fi_domain")?;
        // SAFETY: as the inline fi_domain does: the live fabric, the entry it came from.
        let rc = unsafe { domain(self.fabric, self.chosen, &mut self.domain, ptr::null_mut()) };
        self.check("fi_domain", rc)?;
        // SAFETY: fi_domain succeeded, so `domain` points to a live domain with its tables.
        let domain_ops = unsafe { &*(*self.domain).ops };

        let mut cq_attr = sys::fi_cq_attr {
            size: 0,
            flags: 0,
            format: sys::fi_cq_format::FI_CQ_FORMAT_MSG,
            wait_obj: sys::fi_wait_obj::FI_WAIT_NONE,
            signaling_vector: 0,
            wait_cond: sys::fi_cq_wait_cond::FI_CQ_COND_NONE,
            wait_set: ptr::null_mut(),
        };
        let cq_open = op(domain_ops.cq_open, "fi_cq_open")?;
        // SAFETY: as the inline fi_cq_open: live domain, attributes read during the call.
        let rc = unsafe { cq_open(self.domain, &mut cq_attr, &mut self.cq, ptr::null_mut()) };
        self.check("fi_cq_open", rc)?;

        let mut av_attr = sys::fi_av_attr {
            type_: match domain_attr.av_type {
                sys::fi_av_type::FI_AV_UNSPEC => sys::fi_av_type::FI_AV_TABLE,
                preferred => preferred,
            },
            rx_ctx_bits: 0,
            count: 0,
            ep_per_node: 0,
            name: ptr::null(),
            map_addr: ptr::null_mut(),
            flags: 0,
        };
        let av_open = op(domain_ops.av_open, "fi_av_open")?;
        // SAFETY: as the inline fi_av_open: live domain, attributes read during the call.
        let rc = unsafe { av_open(self.domain, &mut av_attr, &mut self.av, ptr::null_mut()) };
        self.check("fi_av_open", rc)?;

        if domain_attr.mr_mode & sys::FI_MR_LOCAL as c_int != 0 {
            self.register()?;
        }

        let endpoint = op(domain_ops.endpoint, "fi_endpoint")?;
        // SAFETY: as the inline fi_endpoint: live domain, the entry the domain came from.
        let rc = unsafe { endpoint(self.domain, self.chosen, &mut self.ep, ptr::null_mut()) };
        self.check("fi_endpoint", rc)?;
        // SAFETY: fi_endpoint succeeded: `ep` is live, its fid's table set.
        let ep_fid = unsafe { &raw mut (*self.ep).fid };
        // SAFETY: as above.
        let fid_ops = unsafe { &*(*ep_fid).ops };
        let bind = op(fid_ops.bind, "fi_ep_bind")?;
        // SAFETY: as the inline fi_ep_bind: live endpoint and address vector.
        let rc = unsafe { bind(ep_fid, &raw mut (*self.av).fid, 0) };
        self.check("fi_ep_bind (address vector)", rc)?;
        // SAFETY: as above, with the live completion queue for both directions.
        let rc = unsafe {
            bind(
                ep_fid,
                &raw mut (*self.cq).fid,
                u64::from(sys::FI_TRANSMIT | sys::FI_RECV),
            )
        };
        self.check("fi_ep_bind (completion queue)", rc)?;
        let control = op(fid_ops.control, "fi_enable")?;
        // SAFETY: as the inline fi_enable: FI_ENABLE takes no argument.
        let rc = unsafe { control(ep_fid, sys::FI_ENABLE as c_int, ptr::null_mut()) };
        self.check("fi_enable", rc)
    }

    /// `fi_mr_reg` of both buffers, for sending and receiving.
    fn register(&mut self) -> Result<(), FabricError> {
        // SAFETY: the domain is live; its `mr` table is set by the provider.
        let mr_ops =
            unsafe { (*self.domain).mr.as_ref() }.ok_or(FabricError::Unsupported("fi_mr_reg"))?;
        let reg = op(mr_ops.reg, "fi_mr_reg")?;
        for (key, index) in [(1u64, 0usize), (2, 1)] {
            let region = &mut self.regions[index];
            // SAFETY: as the inline fi_mr_reg: the buffer is allocated, never resized, and
            // outlives its registration (Drop closes registrations before freeing buffers);
            // the requested key is unique per domain (providers with FI_MR_PROV_KEY ignore it).
            let rc = unsafe {
                reg(
                    &raw mut (*self.domain).fid,
                    region.bytes.as_ptr().cast::<c_void>(),
                    region.bytes.len(),
                    u64::from(sys::FI_SEND | sys::FI_RECV),
                    0,
                    key,
                    0,
                    &mut region.mr,
                    ptr::null_mut(),
                )
            };
            self.check("fi_mr_reg", rc)?;
        }
        Ok(())
    }

    fn check(&self, function: &'static str, rc: c_int) -> Result<(), FabricError> {
        if rc == 0 {
            Ok(())
        } else {
            Err(self.lib.call_error(function, rc as isize))
        }
    }

    /// The provider, fabric and domain of the endpoint.
    pub(crate) fn describe(&self) -> &FabricEndpoint {
        &self.describe
    }

    /// The largest message either buffer holds.
    pub(crate) fn max_message(&self) -> usize {
        self.max_message
    }

    /// `fi_getname`: the endpoint's own address, which peers insert into their vectors.
    pub(crate) fn name(&self) -> Result<Vec<u8>, FabricError> {
        // SAFETY: the endpoint is enabled; its cm table is set by the provider.
        let cm = unsafe { (*self.ep).cm.as_ref() }.ok_or(FabricError::Unsupported("fi_getname"))?;
        let getname = op(cm.getname, "fi_getname")?;
        let mut address = vec![0u8; 256];
        loop {
            let mut len = address.len();
            // SAFETY: as the inline fi_getname: `address` is writable for `len` bytes, and
            // libfabric sets `len` to the size it needs when that is more.
            let rc = unsafe {
                getname(
                    &raw mut (*self.ep).fid,
                    address.as_mut_ptr().cast::<c_void>(),
                    &mut len,
                )
            };
            if rc == -(sys::FI_ETOOSMALL as c_int) && len > address.len() {
                address.resize(len, 0);
                continue;
            }
            self.check("fi_getname", rc)?;
            address.truncate(len);
            return Ok(address);
        }
    }

    /// `fi_av_insert` of one peer address.
    pub(crate) fn insert(&mut self, address: &[u8]) -> Result<Peer, FabricError> {
        // SAFETY: the address vector is live; its table is set by the provider.
        let av_ops = unsafe { &*(*self.av).ops };
        let insert = op(av_ops.insert, "fi_av_insert")?;
        let mut peer: sys::fi_addr_t = sys::FI_ADDR_UNSPEC;
        // The provider reads as many bytes as its address format has: never read past ours.
        let mut padded = address.to_vec();
        padded.resize(address.len().max(256), 0);
        // SAFETY: as the inline fi_av_insert: one address, readable for its format's length
        // (padded above), one writable fi_addr_t.
        let rc = unsafe {
            insert(
                self.av,
                padded.as_ptr().cast::<c_void>(),
                1,
                &mut peer,
                0,
                ptr::null_mut(),
            )
        };
        if rc == 1 && peer != sys::FI_ADDR_UNSPEC {
            return Ok(Peer(peer));
        }
        if rc < 0 {
            return Err(self.lib.call_error("fi_av_insert", rc as isize));
        }
        Err(FabricError::BadAddress(hex::encode(address)))
    }

    /// The bytes of a buffer, to fill before a send or read after a receive.
    pub(crate) fn buffer(&mut self, buffer: Buffer) -> &mut [u8] {
        &mut self.regions[buffer as usize].bytes
    }

    fn desc(&self, buffer: Buffer) -> *mut c_void {
        let mr = self.regions[buffer as usize].mr;
        if mr.is_null() {
            ptr::null_mut()
        } else {
            // SAFETY: a registration stays live until Drop; fi_mr_desc is this field read.
            unsafe { (*mr).mem_desc }
        }
    }

    /// `fi_recv` into `buffer`, from any peer; completes as [`Completion::Received`]. Retries
    /// while the provider answers `-FI_EAGAIN`, reading completions into `done` meanwhile.
    pub(crate) fn post_receive(
        &mut self,
        buffer: Buffer,
        deadline: Instant,
        done: &mut Vec<Completion>,
    ) -> Result<(), FabricError> {
        self.post(buffer, None, self.max_message, deadline, done)
    }

    /// `fi_send` of the first `len` bytes of `buffer` to `peer`; completes as
    /// [`Completion::Sent`].
    pub(crate) fn post_send(
        &mut self,
        buffer: Buffer,
        peer: Peer,
        len: usize,
        deadline: Instant,
        done: &mut Vec<Completion>,
    ) -> Result<(), FabricError> {
        self.post(
            buffer,
            Some(peer),
            len.min(self.max_message),
            deadline,
            done,
        )
    }

    fn post(
        &mut self,
        buffer: Buffer,
        to: Option<Peer>,
        len: usize,
        deadline: Instant,
        done: &mut Vec<Completion>,
    ) -> Result<(), FabricError> {
        let index = buffer as usize;
        if self.pending[index] {
            return Err(FabricError::Busy);
        }
        // SAFETY: the endpoint is enabled; its msg table is set by the provider.
        let msg = unsafe { (*self.ep).msg.as_ref() }.ok_or(FabricError::Unsupported("fi_msg"))?;
        let function = if to.is_some() { "fi_send" } else { "fi_recv" };
        loop {
            let data = self.regions[index].bytes.as_mut_ptr().cast::<c_void>();
            let desc = self.desc(buffer);
            let context = ptr::from_mut(&mut *self.contexts[index]).cast::<c_void>();
            let rc = match to {
                Some(Peer(peer)) => {
                    let send = op(msg.send, "fi_send")?;
                    // SAFETY: as the inline fi_send: the buffer (registered when the provider
                    // asks) holds `len` bytes and is not touched again until its completion is
                    // read; the context is this buffer's own, which does not move and is not in
                    // use (`pending` is false); `peer` came from this endpoint's vector.
                    unsafe { send(self.ep, data, len, desc, peer, context) }
                }
                None => {
                    let recv = op(msg.recv, "fi_recv")?;
                    // SAFETY: as for the send above, with the buffer writable for `len` bytes.
                    unsafe { recv(self.ep, data, len, desc, sys::FI_ADDR_UNSPEC, context) }
                }
            };
            if rc == 0 {
                self.pending[index] = true;
                return Ok(());
            }
            if rc != -(sys::FI_EAGAIN as isize) {
                return Err(self.lib.call_error(function, rc));
            }
            // The provider is out of resources until it makes progress, which reading the
            // completion queue drives.
            self.poll(done)?;
            if Instant::now() >= deadline {
                return Err(FabricError::Timeout { waiting: function });
            }
        }
    }

    /// Reads the completions there are now into `done`; a completion with an error ends it.
    pub(crate) fn poll(&mut self, done: &mut Vec<Completion>) -> Result<(), FabricError> {
        // SAFETY: the completion queue is live; its table is set by the provider.
        let cq_ops = unsafe { &*(*self.cq).ops };
        let read = op(cq_ops.read, "fi_cq_read")?;
        // SAFETY: fi_cq_msg_entry is plain data; all zeroes is a valid value.
        let mut entries: [sys::fi_cq_msg_entry; CQ_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as the inline fi_cq_read: the queue was opened with FI_CQ_FORMAT_MSG, so
        // each entry is an fi_cq_msg_entry, and `entries` has room for CQ_BATCH of them.
        let rc = unsafe { read(self.cq, entries.as_mut_ptr().cast::<c_void>(), CQ_BATCH) };
        if rc == -(sys::FI_EAGAIN as isize) {
            return Ok(());
        }
        if rc == -(sys::FI_EAVAIL as isize) {
            return Err(self.read_error(cq_ops));
        }
        if rc < 0 {
            return Err(self.lib.call_error("fi_cq_read", rc));
        }
        let count = usize::try_from(rc).unwrap_or(0).min(CQ_BATCH);
        for entry in &entries[..count] {
            if let Some(buffer) = self.buffer_of(entry.op_context) {
                self.pending[buffer as usize] = false;
                done.push(if entry.flags & u64::from(sys::FI_RECV) != 0 {
                    Completion::Received(buffer, entry.len)
                } else {
                    Completion::Sent(buffer)
                });
            }
        }
        Ok(())
    }

    /// Polls until `wanted` is among the completions, keeping the others in `done`.
    pub(crate) fn wait_for(
        &mut self,
        wanted: impl Fn(&Completion) -> bool,
        waiting: &'static str,
        deadline: Instant,
        done: &mut Vec<Completion>,
    ) -> Result<Completion, FabricError> {
        let started = Instant::now();
        loop {
            if let Some(at) = done.iter().position(&wanted) {
                return Ok(done.remove(at));
            }
            self.poll(done)?;
            if done.iter().any(&wanted) {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(FabricError::Timeout { waiting });
            }
            if now.duration_since(started) > SPIN {
                std::thread::sleep(IDLE_POLL);
            }
        }
    }

    fn buffer_of(&self, context: *mut c_void) -> Option<Buffer> {
        [Buffer::First, Buffer::Second].into_iter().find(|b| {
            ptr::eq(
                context.cast_const(),
                ptr::from_ref(&*self.contexts[*b as usize]).cast::<c_void>(),
            )
        })
    }

    /// `fi_cq_readerr`: the error completion waiting at the head of the queue.
    fn read_error(&mut self, cq_ops: &sys::fi_ops_cq) -> FabricError {
        let Some(readerr) = cq_ops.readerr else {
            return FabricError::Unsupported("fi_cq_readerr");
        };
        // SAFETY: fi_cq_err_entry is plain data; all zeroes (no provider error buffer) is the
        // documented way to ask for one.
        let mut entry: sys::fi_cq_err_entry = unsafe { std::mem::zeroed() };
        // SAFETY: as the inline fi_cq_readerr: the queue is live, `entry` writable.
        let rc = unsafe { readerr(self.cq, &mut entry, 0) };
        if rc < 0 {
            return self.lib.call_error("fi_cq_readerr", rc);
        }
        if let Some(buffer) = self.buffer_of(entry.op_context) {
            self.pending[buffer as usize] = false;
        }
        let provider = self.provider_error(cq_ops, &entry);
        FabricError::Completion {
            code: -entry.err.abs(),
            text: self.lib.strerror(entry.err.abs()),
            provider,
        }
    }

    /// `fi_cq_strerror` for the provider's own error number, when it has words for it.
    fn provider_error(&self, cq_ops: &sys::fi_ops_cq, entry: &sys::fi_cq_err_entry) -> String {
        let Some(strerror) = cq_ops.strerror else {
            return String::new();
        };
        let mut text = [0u8; 256];
        // SAFETY: as the inline fi_cq_strerror: the queue is live, the error data is the one
        // the provider handed out with the entry, and it writes at most `len` bytes to `text`.
        let answer = unsafe {
            strerror(
                self.cq,
                entry.prov_errno,
                entry.err_data,
                text.as_mut_ptr().cast(),
                text.len(),
            )
        };
        if answer.is_null() {
            return String::new();
        }
        // SAFETY: non-null answers are NUL-terminated strings that live at least until the
        // next call on this queue.
        unsafe { std::ffi::CStr::from_ptr(answer) }
            .to_string_lossy()
            .trim()
            .to_owned()
    }
}

impl Drop for Endpoint<'_> {
    fn drop(&mut self) {
        // The endpoint first (which cancels what is in flight), then what it was bound to,
        // the registrations, the domain and the fabric; the buffers after their registrations.
        let mut fids: Vec<*mut sys::fid> = Vec::new();
        // SAFETY: each non-null pointer is a live object this
        // endpoint opened and has not closed; taking a field's address reads nothing.
        unsafe {
            if !self.ep.is_null() {
                fids.push(&raw mut (*self.ep).fid);
            }
            if !self.av.is_null() {
                fids.push(&raw mut (*self.av).fid);
            }
            if !self.cq.is_null() {
                fids.push(&raw mut (*self.cq).fid);
            }
            for region in &self.regions {
                if !region.mr.is_null() {
                    fids.push(&raw mut (*region.mr).fid);
                }
            }
            if !self.domain.is_null() {
                fids.push(&raw mut (*self.domain).fid);
            }
            if !self.fabric.is_null() {
                fids.push(&raw mut (*self.fabric).fid);
            }
        }
        for fid in fids {
            // SAFETY: as the inline fi_close: a live object, closed once, after everything
            // that was bound to it or opened from it.
            if let Some(close) = unsafe { (*(*fid).ops).close } {
                // SAFETY: as above.
                let rc = unsafe { close(fid) };
                if rc != 0 {
                    tracing::debug!("fi_close: {rc}");
                }
            }
        }
        // `_entries` is freed when its field drops, after the objects opened from it.
    }
}

impl Libfabric {
    /// `fi_getinfo` for reliable-datagram endpoints of `provider` that send and receive
    /// messages, accepting the modes and registration rules [`Endpoint`] follows.
    fn rdm_info(&self, provider: &str, source: Option<&str>) -> Result<InfoList<'_>, FabricError> {
        let node = source
            .map(|node| CString::new(node).map_err(|_| FabricError::BadAddress(node.to_owned())))
            .transpose()?;
        let query = FabricQuery {
            provider: Some(provider.to_owned()),
            endpoint_type: Some(EndpointType::Rdm),
        };
        let hints = self.hints(&query)?;
        // SAFETY: `hints` is a complete fi_allocinfo result (checked non-null by `hints`), with
        // its attribute structures allocated; nothing else refers to it.
        unsafe {
            let info = &mut *hints.head;
            info.caps = u64::from(sys::FI_MSG | sys::FI_SEND | sys::FI_RECV);
            // Every operation gets its own fi_context2, which satisfies either mode.
            info.mode = sys::FI_CONTEXT | sys::FI_CONTEXT2;
            if let Some(domain) = info.domain_attr.as_mut() {
                domain.mr_mode = MR_MODES as c_int;
                domain.mode = !0;
            }
        }
        self.getinfo_list(hints, node.as_deref(), Some(provider.to_owned()))
    }

    /// The error of a call that answered the negative fi_errno `rc`.
    pub(super) fn call_error(&self, function: &'static str, rc: isize) -> FabricError {
        let code = i32::try_from(rc).unwrap_or(i32::MIN);
        FabricError::Call {
            function,
            code,
            text: self.strerror(code.saturating_abs()),
        }
    }
}

/// An operation context before libfabric has used it.
fn empty_context() -> sys::fi_context2 {
    sys::fi_context2 {
        internal: [ptr::null_mut(); 8],
    }
}

/// The entry of a non-empty list whose endpoints take the largest messages (the first of
/// equals).
fn largest_messages(list: &InfoList<'_>) -> *mut sys::fi_info {
    let mut best = list.head;
    let mut best_size = 0;
    let mut node = list.head;
    while !node.is_null() {
        // SAFETY: `node` is an element of the live list; attribute pointers are NULL or live.
        let (size, next) = unsafe {
            let entry = &*node;
            (
                entry.ep_attr.as_ref().map_or(0, |a| a.max_msg_size),
                entry.next,
            )
        };
        if size > best_size {
            best = node;
            best_size = size;
        }
        node = next;
    }
    best
}
