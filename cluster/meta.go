package cluster

import (
	"fmt"
)

// State is a member's lifecycle state as announced in its gossip metadata.
type State uint8

const (
	// StateJoining: the process is up but its node is not ready to train
	// (loading data, starting the backend). It is never put in a ring.
	StateJoining State = iota + 1
	// StateReady: the node can train and waits to be admitted to a ring.
	StateReady
	// StateTraining: the member is in the latest generation it knows.
	StateTraining
	// StateLeaving: the member is shutting down; it is dropped from the
	// next generation and never made coordinator.
	StateLeaving
	// StateDone: the run is complete (this member trained its last step);
	// the member is leaving. A node outside the ring that sees it exits
	// instead of waiting for a generation that will never come.
	StateDone
)

func (s State) String() string {
	switch s {
	case StateJoining:
		return "joining"
	case StateReady:
		return "ready"
	case StateTraining:
		return "training"
	case StateLeaving:
		return "leaving"
	case StateDone:
		return "done"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// MarshalText writes the state's name, for JSON output.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s State) valid() bool { return s >= StateJoining && s <= StateDone }

// gone reports a member that announced it is leaving, for any reason.
func (s State) gone() bool { return s == StateLeaving || s == StateDone }

// metaVersion is the first byte of every encoded Meta.
const metaVersion = 1

// MaxMetaSize is memberlist's limit on node metadata.
const MaxMetaSize = 512

// Meta is what a member announces about itself in the gossip.
type Meta struct {
	GRPCAddr string `json:"grpc_addr"` // gRPC address peers dial (control, allreduce and data services)
	State    State  `json:"state"`
	Gen      uint64 `json:"gen"`     // last committed generation this member belongs to (0: none)
	Backend  string `json:"backend"` // compute backend, e.g. "cpu" or "cuda"
	Data     string `json:"data"`    // dataset this member holds, e.g. a manifest id
	Version  string `json:"version"` // build version of the binary
}

// encode returns the versioned binary form of m.
func (m Meta) encode() []byte {
	e := encoder{b: make([]byte, 0, 64)}
	e.byte1(metaVersion)
	e.byte1(byte(m.State))
	e.uvarint(m.Gen)
	e.str(m.GRPCAddr)
	e.str(m.Backend)
	e.str(m.Data)
	e.str(m.Version)
	return e.b
}

// decodeMeta parses what encode wrote; any other input is an error.
func decodeMeta(b []byte) (Meta, error) {
	d := decoder{b: b}
	if v := d.byte1("version"); d.err == nil && v != metaVersion {
		return Meta{}, fmt.Errorf("node metadata: version %d: %w", v, errVersion)
	}
	var m Meta
	m.State = State(d.byte1("state"))
	if d.err == nil && !m.State.valid() {
		d.fail("state: unknown value %d", uint8(m.State))
	}
	m.Gen = d.uvarint("generation")
	m.GRPCAddr = d.str("address", maxName)
	m.Backend = d.str("backend", maxName)
	m.Data = d.str("data", maxName)
	m.Version = d.str("version", maxName)
	if err := d.finish("node metadata"); err != nil {
		return Meta{}, err
	}
	return m, nil
}
