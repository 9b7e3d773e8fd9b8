// Loopback ports for tests, benchmarks and the demo, which must write each
// gateway's peer port into the other's config before either starts.
//
// A port taken by binding port 0 and closing comes from the kernel's
// ephemeral range, the same range outgoing connections draw their local
// ports from: before the gateway binds it, another process's connection (or
// our own gateway dialling a peer that is not up yet, which connects to
// itself when the kernel happens to pick the destination port) can hold it,
// and the gateway fails with "address in use". So ports are picked below
// the ephemeral range instead, checked free by binding, and claimed across
// processes with an flock held until the calling process exits.
#ifndef CASEBRIDGE_CORE_LOOPBACK_PORT_H_
#define CASEBRIDGE_CORE_LOOPBACK_PORT_H_

#include "absl/status/statusor.h"

namespace casebridge {

// A TCP port on 127.0.0.1, free now, outside the ephemeral range, and not
// handed out by this function to any other live process. The claim lasts
// until this process exits; the port itself is not held open.
absl::StatusOr<int> ReserveLoopbackPort();

}  // namespace casebridge

#endif  // CASEBRIDGE_CORE_LOOPBACK_PORT_H_
