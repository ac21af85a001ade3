package cluster

import (
	"fmt"
	"time"
)

// wireVersion is the first byte of every control message; the second names
// the message kind, so a message sent to the wrong method is refused.
const wireVersion = 1

const (
	kindProposal byte = iota + 1
	kindAck
	kindCommit
	kindReply
	kindReport
	kindStatusRequest
	kindStatus
	kindAbort
)

// message is a control-service request or response.
type message interface {
	marshal() []byte
	unmarshal([]byte) error
}

func header(kind byte) encoder {
	e := encoder{b: make([]byte, 0, 128)}
	e.byte1(wireVersion)
	e.byte1(kind)
	return e
}

func openMessage(b []byte, kind byte, what string) (*decoder, error) {
	d := &decoder{b: b}
	v := d.byte1("version")
	k := d.byte1("kind")
	if d.err != nil {
		return nil, fmt.Errorf("%s: %w", what, d.err)
	}
	if v != wireVersion {
		return nil, fmt.Errorf("%s: version %d: %w", what, v, errVersion)
	}
	if k != kind {
		return nil, fmt.Errorf("%s: message kind %d, want %d", what, k, kind)
	}
	return d, nil
}

// proposal is phase one: the coordinator asks every member of Ring to stop
// training in its current generation and promise generation ID.
type proposal struct {
	ID          uint64
	Base        uint64 // the coordinator's latest committed generation
	Coordinator string
	Ring        []Member // Fresh marks joiners; Step is unused
}

func (p *proposal) marshal() []byte {
	e := header(kindProposal)
	e.uvarint(p.ID)
	e.uvarint(p.Base)
	e.str(p.Coordinator)
	encodeMembers(&e, p.Ring)
	return e.b
}

func (p *proposal) unmarshal(b []byte) error {
	d, err := openMessage(b, kindProposal, "proposal")
	if err != nil {
		return err
	}
	p.ID = d.uvarint("id")
	p.Base = d.uvarint("base")
	p.Coordinator = d.str("coordinator", maxName)
	p.Ring = decodeMembers(d, "ring")
	if err := d.finish("proposal"); err != nil {
		return err
	}
	return p.validate()
}

func (p *proposal) validate() error {
	g := Generation{ID: p.ID, Base: p.Base, Coordinator: p.Coordinator, Ring: p.Ring}
	if err := g.validate(); err != nil {
		return fmt.Errorf("proposal: %w", err)
	}
	return nil
}

// ack is a member's answer to a proposal.
type ack struct {
	OK       bool
	Reason   string // why not, when !OK
	Name     string
	Promised uint64     // highest proposal number the member has promised
	Step     uint64     // the step boundary the member stopped at
	Cur      Generation // the member's latest committed generation (ID 0: none)
}

func (a *ack) marshal() []byte {
	e := header(kindAck)
	e.bool1(a.OK)
	e.str(a.Reason)
	e.str(a.Name)
	e.uvarint(a.Promised)
	e.uvarint(a.Step)
	encodeGeneration(&e, a.Cur)
	return e.b
}

func (a *ack) unmarshal(b []byte) error {
	d, err := openMessage(b, kindAck, "ack")
	if err != nil {
		return err
	}
	a.OK = d.bool1("ok")
	a.Reason = d.str("reason", maxText)
	a.Name = d.str("name", maxName)
	a.Promised = d.uvarint("promised")
	a.Step = d.uvarint("step")
	a.Cur = decodeGeneration(d)
	if err := d.finish("ack"); err != nil {
		return err
	}
	if a.Cur.ID != 0 {
		if err := a.Cur.validate(); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
	}
	return nil
}

// commit is phase two: every member acknowledged, here is the generation.
type commit struct{ Gen Generation }

func (c *commit) marshal() []byte {
	e := header(kindCommit)
	encodeGeneration(&e, c.Gen)
	return e.b
}

func (c *commit) unmarshal(b []byte) error {
	d, err := openMessage(b, kindCommit, "commit")
	if err != nil {
		return err
	}
	c.Gen = decodeGeneration(d)
	if err := d.finish("commit"); err != nil {
		return err
	}
	if err := c.Gen.validate(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// abort withdraws proposal ID after a failed phase one.
type abort struct {
	ID          uint64
	Coordinator string
}

func (a *abort) marshal() []byte {
	e := header(kindAbort)
	e.uvarint(a.ID)
	e.str(a.Coordinator)
	return e.b
}

func (a *abort) unmarshal(b []byte) error {
	d, err := openMessage(b, kindAbort, "abort")
	if err != nil {
		return err
	}
	a.ID = d.uvarint("id")
	a.Coordinator = d.str("coordinator", maxName)
	return d.finish("abort")
}

// reply answers Commit, Abort and Report.
type reply struct {
	OK     bool
	Reason string
}

func (r *reply) marshal() []byte {
	e := header(kindReply)
	e.bool1(r.OK)
	e.str(r.Reason)
	return e.b
}

func (r *reply) unmarshal(b []byte) error {
	d, err := openMessage(b, kindReply, "reply")
	if err != nil {
		return err
	}
	r.OK = d.bool1("ok")
	r.Reason = d.str("reason", maxText)
	return d.finish("reply")
}

// report tells the coordinator that a step of generation Gen failed on
// Reporter, naming the peer it blames (empty when it cannot tell).
type report struct {
	Gen      uint64
	Reporter string
	Peer     string
	Err      string
}

func (r *report) marshal() []byte {
	e := header(kindReport)
	e.uvarint(r.Gen)
	e.str(r.Reporter)
	e.str(r.Peer)
	e.str(r.Err)
	return e.b
}

func (r *report) unmarshal(b []byte) error {
	d, err := openMessage(b, kindReport, "report")
	if err != nil {
		return err
	}
	r.Gen = d.uvarint("generation")
	r.Reporter = d.str("reporter", maxName)
	r.Peer = d.str("peer", maxName)
	r.Err = d.str("error", maxText)
	if err := d.finish("report"); err != nil {
		return err
	}
	if r.Reporter == "" {
		return fmt.Errorf("report: empty reporter")
	}
	return nil
}

// statusRequest asks a member for its Status.
type statusRequest struct{}

func (*statusRequest) marshal() []byte { e := header(kindStatusRequest); return e.b }

func (*statusRequest) unmarshal(b []byte) error {
	d, err := openMessage(b, kindStatusRequest, "status request")
	if err != nil {
		return err
	}
	return d.finish("status request")
}

// StatusInfo is what the node reports about its training through SetStatus.
type StatusInfo struct {
	Step         uint64    `json:"step"`           // last completed step
	Loss         float64   `json:"loss"`           // training loss of that step
	TokensPerSec float64   `json:"tokens_per_sec"` // this node's throughput
	Updated      time.Time `json:"updated"`        // when the node set this
}

// MemberInfo is one gossip member as a node sees it.
type MemberInfo struct {
	Name   string `json:"name"`
	Gossip string `json:"gossip"` // gossip address host:port
	Meta
}

// Status is a member's view of the cluster, served to `trainer status`.
type Status struct {
	Self        string
	Coordinator string
	Gen         Generation // latest committed generation known
	Members     []MemberInfo
	Info        StatusInfo
}

func (s *Status) marshal() []byte {
	e := header(kindStatus)
	e.str(s.Self)
	e.str(s.Coordinator)
	encodeGeneration(&e, s.Gen)
	e.uvarint(uint64(len(s.Members)))
	for _, m := range s.Members {
		e.str(m.Name)
		e.str(m.Gossip)
		meta := m.Meta.encode()
		e.str(string(meta))
	}
	e.uvarint(s.Info.Step)
	e.f64(s.Info.Loss)
	e.f64(s.Info.TokensPerSec)
	var t int64
	if !s.Info.Updated.IsZero() {
		t = s.Info.Updated.UnixNano()
	}
	e.uvarint(uint64(t))
	return e.b
}

func (s *Status) unmarshal(b []byte) error {
	d, err := openMessage(b, kindStatus, "status")
	if err != nil {
		return err
	}
	s.Self = d.str("self", maxName)
	s.Coordinator = d.str("coordinator", maxName)
	s.Gen = decodeGeneration(d)
	n := d.count("members", maxMembers, 3)
	s.Members = make([]MemberInfo, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		var m MemberInfo
		m.Name = d.str("member name", maxName)
		m.Gossip = d.str("member gossip address", maxName)
		raw := d.str("member metadata", MaxMetaSize)
		if d.err != nil {
			break
		}
		meta, err := decodeMeta([]byte(raw))
		if err != nil {
			return fmt.Errorf("status: member %q: %w", m.Name, err)
		}
		m.Meta = meta
		s.Members = append(s.Members, m)
	}
	s.Info.Step = d.uvarint("step")
	s.Info.Loss = d.f64("loss")
	s.Info.TokensPerSec = d.f64("throughput")
	if t := int64(d.uvarint("updated")); t != 0 {
		s.Info.Updated = time.Unix(0, t)
	}
	if err := d.finish("status"); err != nil {
		return err
	}
	if s.Gen.ID != 0 {
		if err := s.Gen.validate(); err != nil {
			return fmt.Errorf("status: %w", err)
		}
	}
	return nil
}

// codec is the gRPC codec of the control service: it carries messages in
// the binary form above. It is registered under its own name and chosen per
// call, so it never replaces the default proto codec.
type codec struct{}

const codecName = "difftrain-cluster"

func (codec) Name() string { return codecName }

func (codec) Marshal(v any) ([]byte, error) {
	m, ok := v.(message)
	if !ok {
		return nil, fmt.Errorf("cluster codec: cannot marshal %T", v)
	}
	return m.marshal(), nil
}

func (codec) Unmarshal(b []byte, v any) error {
	m, ok := v.(message)
	if !ok {
		return fmt.Errorf("cluster codec: cannot unmarshal into %T", v)
	}
	return m.unmarshal(b)
}
