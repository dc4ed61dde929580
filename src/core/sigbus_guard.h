// SIGBUS guard for memory-mapped model files. A file that shrinks (truncate, cp onto it) while mapped makes
// every later access to the lost pages raise SIGBUS, which by default kills the process without a word.
// MappedFile::open registers each mapping here (address range, path, file identity); once install() has
// run, a SIGBUS whose fault address lies in a registered range prints
//   "<program>: error: model file '<path>' was truncated or replaced while in use"
// with write(2) and ends the process with _exit(1). Faults anywhere else go to the previous action
// (restored, then the fault re-executes), so other handlers (sanitizers, the default core dump) still see
// them. The registry is a fixed array of atomics and fixed-size path buffers: the handler only reads it,
// allocates nothing and calls only async-signal-safe functions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rwkvl::sigbus_guard {

// Installs the handler (idempotent, thread-safe). `program` prefixes the message (copied; at most 63 bytes).
void install(const char* program);
bool installed();

// Registers [base, base + size) as a mapping of the file open as `fd` at `path` (its device, inode, size and
// modification time are kept for changed()). Returns false when the registry is full (the mapping is then
// simply not guarded). Paths longer than the buffer are cut (the message shows their start).
bool add(const void* base, size_t size, const char* path, int fd);
// Unregisters the mapping that starts at base (no-op if none). Call before munmap.
void remove(const void* base);
// Registered mappings (tests).
int count();

// For the registered mapping that contains `addr`: true when the mapped file was modified in place since it was
// mapped (same inode at the path, another size or modification time), i.e. the bytes under the mapping may
// have changed. False when unknown, unchanged, removed or replaced by another file (a rename over the path
// leaves the mapped inode intact). One stat(2); not for signal handlers.
bool changed(const void* addr);

// The message the handler writes for `path` (for tests), without the program prefix.
constexpr const char* kMessage = "was truncated or replaced while in use";

}  // namespace rwkvl::sigbus_guard
