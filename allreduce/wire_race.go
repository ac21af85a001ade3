//go:build race

package allreduce

import "sync/atomic"

// wire stands for the TCP connections between the members that share this
// process, under the race detector, which cannot see that a message read on
// one side was written on the other: a member's send happens before the
// receive of anything that depends on it, as the ring's order relies on.
// Every gathered write releases it and every received message acquires it.
var wire atomic.Uint64

func wireWritten() { wire.Add(1) }
func wireRead()    { wire.Load() }
