/*
 * What rayefa's libfabric bindings are generated from: libfabric's public headers as the
 * distribution's libfabric-dev installs them, plus one pointer type per function the agent
 * resolves at run time. Nothing links against libfabric, so the functions are reached only
 * through these pointer types; their signatures come from the headers' own declarations.
 */
#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>

typedef __typeof__(fi_version) *fi_version_fn;
typedef __typeof__(fi_getinfo) *fi_getinfo_fn;
typedef __typeof__(fi_freeinfo) *fi_freeinfo_fn;
typedef __typeof__(fi_dupinfo) *fi_dupinfo_fn;
typedef __typeof__(fi_strerror) *fi_strerror_fn;
typedef __typeof__(fi_tostr_r) *fi_tostr_r_fn;
