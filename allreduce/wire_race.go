//go:build race

package allreduce

import (
	"net"
	"sync/atomic"
)

// wire stands for the TCP connections between the members that share this
// process, under the race detector, which cannot see that a message read on
// one side was written on the other: a member's send happens before the
// receive of anything that depends on it, as the ring's order relies on.
// Every gathered write releases it and every received message acquires it.
var wire atomic.Uint64

// wireWritten also reads the first and last byte of every buffer about to
// be written, where the detector sees it (it does not see what writev(2)
// reads): a buffer changed while a link may still write it, a zero-copy
// view of a gradient that went back to its caller too early above all, is
// reported as a race.
func wireWritten(bufs net.Buffers) {
	var x byte
	for _, b := range bufs {
		if len(b) > 0 {
			x ^= b[0] ^ b[len(b)-1]
		}
	}
	wireSink.Store(uint32(x))
	wire.Add(1)
}

var wireSink atomic.Uint32

func wireRead() { wire.Load() }
