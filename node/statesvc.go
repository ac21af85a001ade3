package node

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/train"
)

// State transfer: a joiner (or a member that fell behind) streams the full
// training state of a ring member at a step boundary. The member takes a
// host snapshot when a generation needs one, so it keeps training while the
// bytes go out. The stream is a JSON header followed by raw little-endian
// float32 chunks (parameters, first and second moments, error-feedback
// residual); the header carries their sha256, which the receiver checks.

const (
	stateService = "difftrain.node.State"
	stateMethod  = "/" + stateService + "/Fetch"
	stateChunk   = 1 << 20 // bytes per message
	maxHeader    = 1 << 20
)

// stateHeader describes a snapshot.
type stateHeader struct {
	Step     int64           `json:"step"` // steps completed
	Config   json.RawMessage `json:"config"`
	Params   int             `json:"params"`   // floats in each of params, m, v
	Residual int             `json:"residual"` // floats of error-feedback residual
	SHA256   string          `json:"sha256"`   // of the payload bytes
}

type stateRequest struct {
	Step int64 `json:"step"`
}

// snapshot is the state a member serves.
type snapshot struct {
	hdr   stateHeader
	state train.State
	resid []float32
}

func (s *snapshot) parts() [][]float32 {
	return [][]float32{s.state.Params, s.state.M, s.state.V, s.resid}
}

// seal computes the header's checksum over the payload.
func (s *snapshot) seal() {
	h := sha256.New()
	buf := make([]byte, stateChunk)
	for _, p := range s.parts() {
		for len(p) > 0 {
			n := min(len(p), len(buf)/4)
			putFloats(buf, p[:n])
			h.Write(buf[:4*n])
			p = p[n:]
		}
	}
	s.hdr.Params, s.hdr.Residual = len(s.state.Params), len(s.resid)
	s.hdr.SHA256 = hex.EncodeToString(h.Sum(nil))
}

func putFloats(dst []byte, src []float32) {
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

// stateServer serves the newest snapshot.
type stateServer struct {
	mu   sync.Mutex
	snap *snapshot
}

func (s *stateServer) set(sn *snapshot) {
	s.mu.Lock()
	s.snap = sn
	s.mu.Unlock()
}

func (s *stateServer) register(g *grpc.Server) {
	g.RegisterService(&grpc.ServiceDesc{
		ServiceName: stateService,
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Fetch",
			Handler:       func(_ any, ss grpc.ServerStream) error { return s.fetch(ss) },
			ServerStreams: true,
		}},
	}, nil)
}

func (s *stateServer) fetch(ss grpc.ServerStream) error {
	var req []byte
	if err := ss.RecvMsg(&req); err != nil {
		return err
	}
	var r stateRequest
	if err := json.Unmarshal(req, &r); err != nil {
		return fmt.Errorf("state request: %w", err)
	}
	s.mu.Lock()
	sn := s.snap
	s.mu.Unlock()
	if sn == nil || sn.hdr.Step != r.Step {
		have := int64(-1)
		if sn != nil {
			have = sn.hdr.Step
		}
		return fmt.Errorf("no state snapshot for step %d (have %d)", r.Step, have)
	}
	hdr, _ := json.Marshal(sn.hdr)
	if err := ss.SendMsg(&hdr); err != nil {
		return err
	}
	for _, p := range sn.parts() {
		for len(p) > 0 {
			n := min(len(p), stateChunk/4)
			// A fresh buffer per message: gRPC may still hold the last one.
			out := make([]byte, 4*n)
			putFloats(out, p[:n])
			if err := ss.SendMsg(&out); err != nil {
				return err
			}
			p = p[n:]
		}
	}
	return nil
}

// fetchState streams the snapshot of step from the member at addr and
// verifies it. expect, when not nil, is the configuration this node already
// runs: a header for another one is refused before anything is allocated.
func fetchState(ctx context.Context, addr string, step int64, opts []grpc.DialOption, expect *train.Config) (*snapshot, error) {
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("state from %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, stateMethod,
		grpc.ForceCodecV2(rawCodec{}), grpc.MaxCallRecvMsgSize(2*stateChunk))
	if err != nil {
		return nil, fmt.Errorf("state from %s: %w", addr, err)
	}
	req, _ := json.Marshal(stateRequest{Step: step})
	if err := st.SendMsg(&req); err != nil {
		return nil, fmt.Errorf("state from %s: %w", addr, err)
	}
	if err := st.CloseSend(); err != nil {
		return nil, fmt.Errorf("state from %s: %w", addr, err)
	}
	var raw []byte
	if err := st.RecvMsg(&raw); err != nil {
		return nil, fmt.Errorf("state from %s: header: %w", addr, err)
	}
	sn, err := decodeHeader(raw, step, expect)
	if err != nil {
		return nil, fmt.Errorf("state from %s: %w", addr, err)
	}
	h := sha256.New()
	for _, p := range sn.parts() {
		off := 0
		for off < len(p) {
			var chunk []byte
			if err := st.RecvMsg(&chunk); err != nil {
				return nil, fmt.Errorf("state from %s: after %d of %d floats: %w", addr, off, len(p), err)
			}
			if len(chunk)%4 != 0 || len(chunk)/4 > len(p)-off {
				return nil, fmt.Errorf("state from %s: chunk of %d bytes does not fit the %d floats left", addr, len(chunk), len(p)-off)
			}
			h.Write(chunk)
			for i := 0; i < len(chunk)/4; i++ {
				p[off+i] = math.Float32frombits(binary.LittleEndian.Uint32(chunk[4*i:]))
			}
			off += len(chunk) / 4
		}
	}
	var extra []byte
	if err := st.RecvMsg(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("state from %s: unexpected data after the payload (%v)", addr, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sn.hdr.SHA256 {
		return nil, fmt.Errorf("state from %s: checksum %s, header says %s", addr, got, sn.hdr.SHA256)
	}
	return sn, nil
}

// maxStateParams bounds the parameters of a state transfer (each of
// params, m and v is 4 bytes a parameter).
const maxStateParams = 1 << 31

// decodeHeader validates a state header and allocates the payload. Every
// length comes from the network: the parameter count must be the one of the
// header's model (and of expect's, when given), which is bounded before
// the layout is even computed, so nothing is allocated for a header that
// does not describe the run.
func decodeHeader(raw []byte, step int64, expect *train.Config) (*snapshot, error) {
	if len(raw) > maxHeader {
		return nil, fmt.Errorf("state header of %d bytes exceeds %d", len(raw), maxHeader)
	}
	var hdr stateHeader
	if err := json.Unmarshal(raw, &hdr); err != nil {
		return nil, fmt.Errorf("state header: %w", err)
	}
	var cfg train.Config
	if err := json.Unmarshal(hdr.Config, &cfg); err != nil {
		return nil, fmt.Errorf("state header config: %w", err)
	}
	if expect != nil && cfg != *expect {
		return nil, fmt.Errorf("state header: configuration %s differs from this node's", hdr.Config)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("state header config: %w", err)
	}
	if b := paramBound(cfg.Model); b > maxStateParams {
		return nil, fmt.Errorf("state header: a model of about %.3g parameters exceeds %d", b, maxStateParams)
	}
	want := model.NumParams(cfg.Model)
	switch {
	case hdr.Step != step:
		return nil, fmt.Errorf("state header: step %d, asked for %d", hdr.Step, step)
	case hdr.Params != want:
		return nil, fmt.Errorf("state header: %d parameters, its model has %d", hdr.Params, want)
	case hdr.Residual != 0 && hdr.Residual != hdr.Params:
		return nil, fmt.Errorf("state header: residual of %d floats for %d parameters", hdr.Residual, hdr.Params)
	case len(hdr.SHA256) != 64:
		return nil, fmt.Errorf("state header: checksum %q", hdr.SHA256)
	}
	sn := &snapshot{hdr: hdr}
	n := hdr.Params
	sn.state = train.State{Params: make([]float32, n), M: make([]float32, n), V: make([]float32, n)}
	sn.resid = make([]float32, hdr.Residual)
	return sn, nil
}

// paramBound is model.NumParams in floating point, safe from overflow and
// without building the layout, for sizes read from the network.
func paramBound(c model.Config) float64 {
	d, v, l := float64(c.Dim), float64(c.Vocab), float64(c.Layers)
	f := float64(c.MLPMult) * d
	return 2*v*d + d + l*(4*d*d+2*d*f+f+7*d)
}

// rawCodec passes []byte messages through untouched. It is registered under
// its own name, so the server finds it for this service only.
type rawCodec struct{}

func init() { encoding.RegisterCodecV2(rawCodec{}) }

func (rawCodec) Name() string { return "difftrain-state" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*b = data.Materialize()
	return nil
}

// expectConfig is the configuration a fetched state must have: this node's
// once it has a trainer, else nil (a joiner takes the donor's).
func (n *Node) expectConfig() *train.Config {
	if n.tr == nil {
		return nil
	}
	c := n.cfg
	return &c
}
