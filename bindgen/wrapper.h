/*
 * What rayefa's libfabric bindings are generated from: libfabric's public headers as the
 * distribution's libfabric-dev installs them, plus one pointer type per function the agent
 * resolves at run time. Nothing links against libfabric, so the functions are reached only
 * through these pointer types; their signatures come from the headers' own declarations.
 *
 * The data path (fi_domain, fi_endpoint, fi_av_open, fi_send, fi_cq_read, ...) is made of
 * static inline functions in these headers that call through each object's tables of
 * operations; those structures (struct fid_domain, struct fi_ops_msg, ...) are what the agent
 * needs from them, and only fi_fabric is a function the library exports.
 */
#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>

typedef __typeof__(fi_version) *fi_version_fn;
typedef __typeof__(fi_getinfo) *fi_getinfo_fn;
typedef __typeof__(fi_freeinfo) *fi_freeinfo_fn;
typedef __typeof__(fi_dupinfo) *fi_dupinfo_fn;
typedef __typeof__(fi_strerror) *fi_strerror_fn;
typedef __typeof__(fi_tostr_r) *fi_tostr_r_fn;
typedef __typeof__(fi_fabric) *fi_fabric_fn;
