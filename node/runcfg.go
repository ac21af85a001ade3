package node

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/difftrain/difftrain/cluster"
	"github.com/difftrain/difftrain/train"
)

// RingSettings are the settings besides the training configuration that
// every member of a ring must share. The run's are the seed's; joiners adopt
// them, and a joiner's explicit flag that conflicts is refused before it is
// admitted.
type RingSettings struct {
	Codec              string `json:"codec"`
	PowerSGDRank       int    `json:"powersgd_rank,omitempty"`
	PowerSGDStart      int    `json:"powersgd_start,omitempty"`
	PowerSGDEmbeddings bool   `json:"powersgd_embeddings,omitempty"`
	BucketBytes        int    `json:"bucket_bytes"`
	AllreduceChecksum  bool   `json:"allreduce_checksum"`
	ChecksumEvery      int    `json:"checksum_every"`
	MaxBadSteps        int    `json:"max_bad_steps"`
	MinNodes           int    `json:"min_nodes"`
	MaxNodes           int    `json:"max_nodes"`
}

// RunConfig is the single source of truth for everything the ring must
// agree on: the run's trajectory and its ring settings.
type RunConfig struct {
	Train train.Config `json:"train"`
	Ring  RingSettings `json:"ring"`
}

// ringSettings reads the ring settings of the node's options.
func (o *Options) ringSettings() RingSettings {
	return RingSettings{
		Codec: cmp.Or(o.Codec, "none"), PowerSGDRank: o.PowerSGDRank, PowerSGDStart: o.PowerSGDStart, PowerSGDEmbeddings: o.PowerSGDEmbeddings, BucketBytes: o.BucketBytes, AllreduceChecksum: o.AllreduceChecksum,
		ChecksumEvery: o.ChecksumEvery, MaxBadSteps: o.MaxBadSteps, MinNodes: o.Cluster.MinNodes, MaxNodes: o.Cluster.MaxNodes,
	}
}

// adoptRing sets the node's options to the ring's settings.
func (o *Options) adoptRing(r RingSettings) {
	o.Codec, o.PowerSGDRank, o.BucketBytes, o.AllreduceChecksum = r.Codec, r.PowerSGDRank, r.BucketBytes, r.AllreduceChecksum
	o.PowerSGDStart, o.PowerSGDEmbeddings = r.PowerSGDStart, r.PowerSGDEmbeddings
	o.ChecksumEvery, o.MaxBadSteps = r.ChecksumEvery, r.MaxBadSteps
	o.Cluster.MinNodes, o.Cluster.MaxNodes = r.MinNodes, r.MaxNodes
}

// ringFields maps the flags that must agree across the ring to the run
// configuration's value, in the flag's own units.
var ringFields = map[string]func(RunConfig) string{
	"codec":               func(r RunConfig) string { return r.Ring.Codec },
	"powersgd-rank":       func(r RunConfig) string { return strconv.Itoa(r.Ring.PowerSGDRank) },
	"powersgd-start":      func(r RunConfig) string { return strconv.Itoa(r.Ring.PowerSGDStart) },
	"powersgd-embeddings": func(r RunConfig) string { return strconv.FormatBool(r.Ring.PowerSGDEmbeddings) },
	"bucket-mb":           func(r RunConfig) string { return fmtFloat(float64(r.Ring.BucketBytes) / (1 << 20)) },
	"allreduce-checksum":  func(r RunConfig) string { return strconv.FormatBool(r.Ring.AllreduceChecksum) },
	"checksum-every":      func(r RunConfig) string { return strconv.Itoa(r.Ring.ChecksumEvery) },
	"max-bad-steps":       func(r RunConfig) string { return strconv.Itoa(r.Ring.MaxBadSteps) },
	"min-nodes":           func(r RunConfig) string { return strconv.Itoa(r.Ring.MinNodes) },
	"max-nodes":           func(r RunConfig) string { return strconv.Itoa(r.Ring.MaxNodes) },
	"vocab":               func(r RunConfig) string { return strconv.Itoa(r.Train.Model.Vocab) },
	"seq-len":             func(r RunConfig) string { return strconv.Itoa(r.Train.Model.SeqLen) },
	"layers":              func(r RunConfig) string { return strconv.Itoa(r.Train.Model.Layers) },
	"dim":                 func(r RunConfig) string { return strconv.Itoa(r.Train.Model.Dim) },
	"heads":               func(r RunConfig) string { return strconv.Itoa(r.Train.Model.Heads) },
	"noise":               func(r RunConfig) string { return r.Train.Noise },
	"optimizer":           func(r RunConfig) string { return r.Train.Optimizer },
	"lr":                  func(r RunConfig) string { return fmtFloat(r.Train.LR) },
	"warmup":              func(r RunConfig) string { return strconv.Itoa(r.Train.Warmup) },
	"cooldown":            func(r RunConfig) string { return fmtFloat(r.Train.Cooldown) },
	"steps":               func(r RunConfig) string { return strconv.Itoa(r.Train.Steps) },
	"batch":               func(r RunConfig) string { return strconv.Itoa(r.Train.Batch) },
	"micro-batch":         func(r RunConfig) string { return strconv.Itoa(r.Train.MicroBatch) },
	"seed":                func(r RunConfig) string { return strconv.FormatUint(r.Train.Seed, 10) },
	"prompt-p":            func(r RunConfig) string { return fmtFloat(r.Train.PPrompt) },
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// Conflicts reports every explicitly given flag (name → value as given)
// whose value differs from the run's, naming the field and both values.
// Flags that need not agree are ignored.
func (r RunConfig) Conflicts(explicit map[string]string) error {
	var bad []string
	for _, name := range slices.Sorted(maps.Keys(explicit)) {
		get, ok := ringFields[name]
		if !ok {
			continue
		}
		mine, run := explicit[name], get(r)
		if same(mine, run) || (name == "micro-batch" && mine == "0") {
			continue
		}
		bad = append(bad, fmt.Sprintf("--%s=%s (the run has %s)", name, mine, run))
	}
	if len(bad) > 0 {
		return fmt.Errorf("flags conflict with the running ring's configuration: %s; drop them to adopt the run's values", strings.Join(bad, ", "))
	}
	return nil
}

// same compares flag values as numbers when both are numbers.
func same(a, b string) bool {
	if a == b {
		return true
	}
	x, err1 := strconv.ParseFloat(a, 64)
	y, err2 := strconv.ParseFloat(b, 64)
	return err1 == nil && err2 == nil && x == y
}

// decodeRunConfig parses a run configuration received from a peer.
func decodeRunConfig(b []byte) (RunConfig, error) {
	var rc RunConfig
	if len(b) > maxHeader {
		return rc, fmt.Errorf("run config of %d bytes exceeds %d", len(b), maxHeader)
	}
	if err := json.Unmarshal(b, &rc); err != nil {
		return rc, fmt.Errorf("run config: %w", err)
	}
	if err := rc.Train.Validate(); err != nil {
		return rc, fmt.Errorf("run config: %w", err)
	}
	if rc.Ring.BucketBytes < 0 || rc.Ring.ChecksumEvery < 0 || rc.Ring.MaxBadSteps < 0 || rc.Ring.MinNodes < 0 || rc.Ring.MaxNodes < 0 || rc.Ring.PowerSGDStart < -1 {
		return rc, fmt.Errorf("run config: bad ring settings %+v", rc.Ring)
	}
	return rc, nil
}

const (
	runService = "difftrain.node.Run"
	runMethod  = "/" + runService + "/Config"
)

// runServer serves the run's configuration to nodes about to join.
type runServer struct {
	mu  sync.Mutex
	cfg []byte // JSON of RunConfig; nil until the node has one
}

func (s *runServer) set(rc RunConfig) {
	b, _ := json.Marshal(rc)
	s.mu.Lock()
	s.cfg = b
	s.mu.Unlock()
}

func (s *runServer) register(srv *grpc.Server) {
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: runService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Config", Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			var req []byte
			if err := dec(&req); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "%s: %v", runMethod, err)
			}
			h := func(context.Context, any) (any, error) {
				s.mu.Lock()
				b := s.cfg
				s.mu.Unlock()
				if b == nil {
					return nil, status.Error(codes.Unavailable, "this node has no run configuration yet")
				}
				return &b, nil
			}
			if icpt == nil {
				return h(ctx, &req)
			}
			return icpt(ctx, &req, &grpc.UnaryServerInfo{Server: s, FullMethod: runMethod}, h)
		}}},
		Metadata: "difftrain/node/run",
	}, s)
}

// fetchRunConfig asks the node at addr for the run's configuration.
func fetchRunConfig(ctx context.Context, addr string, opts []grpc.DialOption) (RunConfig, error) {
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return RunConfig{}, fmt.Errorf("run config from %s: %w", addr, err)
	}
	defer conn.Close()
	req, resp := []byte{}, []byte(nil)
	if err := conn.Invoke(ctx, runMethod, &req, &resp, grpc.ForceCodecV2(rawCodec{}), grpc.MaxCallRecvMsgSize(maxHeader)); err != nil {
		return RunConfig{}, fmt.Errorf("run config from %s: %w", addr, err)
	}
	rc, err := decodeRunConfig(resp)
	if err != nil {
		return rc, fmt.Errorf("from %s: %w", addr, err)
	}
	return rc, nil
}

// runConfigSources orders the members to ask for the run's configuration:
// those training in the newest generation first, then the rest (before the
// first ring forms, only the seed has one; members without one say so).
func runConfigSources(ms []cluster.MemberInfo, self string) []cluster.MemberInfo {
	var out []cluster.MemberInfo
	for _, m := range ms {
		if m.Name != self && m.GRPCAddr != "" && (m.State == cluster.StateReady || m.State == cluster.StateTraining) {
			out = append(out, m)
		}
	}
	slices.SortStableFunc(out, func(a, b cluster.MemberInfo) int {
		ta, tb := a.State == cluster.StateTraining, b.State == cluster.StateTraining
		switch {
		case ta != tb && ta:
			return -1
		case ta != tb:
			return 1
		}
		return cmp.Compare(b.Gen, a.Gen)
	})
	return out
}

// learnRunConfig asks the other members for the run's configuration (see
// runConfigSources), until one answers or ctx ends.
func (n *Node) learnRunConfig(ctx context.Context) (RunConfig, error) {
	err := errors.New("no member of a running ring answered")
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		if who, done := n.cl.RunDone(); done {
			return RunConfig{}, &runDoneError{by: who}
		}
		for _, m := range runConfigSources(n.cl.Members(), n.cl.Name()) {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			rc, e := fetchRunConfig(cctx, m.GRPCAddr, n.dial)
			cancel()
			if e == nil {
				return rc, nil
			}
			err = e
			if status.Code(errors.Unwrap(e)) == codes.InvalidArgument {
				return rc, e
			}
		}
		select {
		case <-ctx.Done():
			return RunConfig{}, fmt.Errorf("learning the run's configuration: %w (last: %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}

// runDoneError: the run this node wanted to join is complete.
type runDoneError struct{ by string }

func (e *runDoneError) Error() string {
	return fmt.Sprintf("the run is complete (announced by %s): nothing to join", e.by)
}
