package allreduce

import (
	"context"
	"encoding/binary"
)

// A Transport carries messages between ring members, after hashicorp/raft's
// Transport: one implementation over gRPC for real clusters, one in memory
// for tests of many members in one process.
//
// Each member sends only to its right neighbour and receives from its left
// one, but a Transport does not know the ring: the caller names the peer to
// dial, and the inbox mixes whatever arrives (messages from an old
// generation are filtered by the ring, not by the transport).
type Transport interface {
	// Addr is the address other members dial to reach this one.
	Addr() string
	// Dial returns a link to the member at addr, reusing an open one. A link
	// that has failed is replaced by a fresh one.
	Dial(ctx context.Context, addr string) (Link, error)
	// Inbox yields received frames in order per sender, and one frame with Err
	// set when the stream from a sender breaks. The consumer releases them.
	Inbox() <-chan *Frame
	// Close shuts the transport down; its peers see their streams break.
	Close() error
}

// A Retainer is a Transport that can close the links to members that left
// the ring. A Reducer calls Retain with the members' addresses when it
// starts the first step of a new generation.
type Retainer interface {
	Retain(addrs []string)
}

// A Link sends messages to one peer, in order.
type Link interface {
	// Send transmits f and takes ownership of it: the transport releases f
	// when it no longer needs it, whether Send succeeds or not. Send blocks
	// while the peer is not reading (flow control) and fails, breaking the
	// link, when ctx ends first.
	Send(ctx context.Context, f *Frame) error
}

// frameGen returns the generation in a raw message, or 0 if it has none.
func frameGen(b []byte) uint64 {
	if len(b) < headerSize || [4]byte(b[0:4]) != magic {
		return 0
	}
	return binary.LittleEndian.Uint64(b[8:])
}
