package cluster

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc"
)

// Config configures one member.
type Config struct {
	// Name prefixes the member name (default: the host name). A random
	// suffix is always added, so a restarted process is a new member.
	Name string

	// Gossip listens on BindAddr:BindPort (port 0 picks a free one) and
	// tells peers AdvertiseAddr:AdvertisePort, which defaults to the bind
	// values (or the first private address for 0.0.0.0). In a container
	// they usually differ. BindAddr defaults to DefaultHost: 0.0.0.0 with
	// a cluster key, 127.0.0.1 without one. Gossip beyond loopback without
	// the key is refused unless Insecure is set (see CheckExposure).
	BindAddr      string
	BindPort      int
	AdvertiseAddr string
	AdvertisePort int

	// GRPCAddr is the host:port peers dial for the node's gRPC server
	// (control, allreduce and data services). Required.
	GRPCAddr string

	// Seeds are gossip addresses (host:port) to join. Join retries them
	// with backoff for JoinTimeout (default 2 minutes).
	Seeds       []string
	JoinTimeout time.Duration

	// MinNodes is the least ring size (default 1); MaxNodes the most (0:
	// no limit). A new generation also needs a majority of the previous
	// one's members. Set MinNodes to a majority of the nodes you start so
	// that nodes started apart cannot each form a first generation.
	MinNodes int
	MaxNodes int

	// Step is the step boundary the node resumes from (its newest
	// checkpoint's step), reported until the node calls AtStep.
	Step uint64

	// Announced in the gossip metadata. Data is non-empty when the member
	// serves dataset shards (Flight); it is announced only as DataTag(Data),
	// so gossip and `trainer status` carry no file paths.
	Backend string
	Data    string
	Version string

	// Security protects gossip and RPCs; nil runs unprotected, which is
	// allowed beyond loopback only with Insecure.
	Security *Security
	// Insecure allows gossip beyond loopback without the cluster key. The
	// caller warns once (CheckExposure does).
	Insecure bool

	Timing Timing

	// WrapTransport, if set, wraps memberlist's network transport, for
	// fault injection in tests.
	WrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
	// DialOptions are added to the control-RPC client options.
	DialOptions []grpc.DialOption

	Logger *slog.Logger
}

// Timing holds the protocol's intervals and timeouts.
type Timing struct {
	ProbeInterval    time.Duration // memberlist failure-detector probe
	ProbeTimeout     time.Duration
	GossipInterval   time.Duration
	PushPullInterval time.Duration
	SuspicionMult    int
	DeadGossip       time.Duration // memberlist GossipToTheDeadTime

	Reconcile  time.Duration // how often the coordinator checks the ring
	RPCTimeout time.Duration // one Propose, Commit or Report call
	Pending    time.Duration // how long an acknowledged proposal waits for its commit
	Penalty    time.Duration // how long a failed member is kept out of new rings
	Reconnect  time.Duration // how often to try peers seen dead, to heal partitions
	// StallProbe: while a step runs longer than this, the member asks its
	// ring-mates for their status this often; one that does not answer is
	// reported failed (see Cluster.watchStall).
	StallProbe  time.Duration
	LeaveWait   time.Duration // how long Close waits for a ring without this member
	JoinBackoff time.Duration // first retry delay of Join (doubles up to 5 s)
}

// DefaultTiming returns memberlist's LAN defaults and protocol timeouts
// suited to a data-center cluster.
func DefaultTiming() Timing {
	// memberlist's LAN profile, probing twice as often: a member that
	// vanishes without closing its sockets (a partition, a frozen host) is
	// declared dead in about 2 s instead of 4-5 s, for one more 100-byte
	// UDP probe per member per second. Crashes that close sockets are
	// found faster still: the allreduce fails at once, and a member that
	// cannot reach the coordinator suspects it (Cluster.suspect).
	lan := memberlist.DefaultLANConfig()
	return Timing{
		ProbeInterval:    500 * time.Millisecond,
		ProbeTimeout:     400 * time.Millisecond,
		GossipInterval:   lan.GossipInterval,
		PushPullInterval: lan.PushPullInterval,
		SuspicionMult:    lan.SuspicionMult,
		DeadGossip:       lan.GossipToTheDeadTime,
		Reconcile:        250 * time.Millisecond,
		// Members acknowledge a proposal at once (they wait only for an
		// update being applied), so a member that needs longer than this
		// is stuck or unreachable.
		RPCTimeout:  3 * time.Second,
		Pending:     10 * time.Second,
		Penalty:     30 * time.Second,
		Reconnect:   5 * time.Second,
		StallProbe:  time.Second,
		LeaveWait:   15 * time.Second,
		JoinBackoff: 250 * time.Millisecond,
	}
}

// FastTiming returns short intervals for tests on one machine. They
// still tolerate a loaded machine under the race detector: shorter probe
// timeouts made members falsely dead there.
func FastTiming() Timing {
	return Timing{
		ProbeInterval:    250 * time.Millisecond,
		ProbeTimeout:     200 * time.Millisecond,
		GossipInterval:   20 * time.Millisecond,
		PushPullInterval: 500 * time.Millisecond,
		SuspicionMult:    3,
		DeadGossip:       2 * time.Second,
		Reconcile:        50 * time.Millisecond,
		RPCTimeout:       2 * time.Second,
		Pending:          5 * time.Second,
		Penalty:          2 * time.Second,
		Reconnect:        300 * time.Millisecond,
		StallProbe:       500 * time.Millisecond,
		LeaveWait:        5 * time.Second,
		JoinBackoff:      50 * time.Millisecond,
	}
}

// withDefaults fills zero fields and checks the rest.
func (c Config) withDefaults() (Config, error) {
	if c.GRPCAddr == "" {
		return c, errors.New("cluster config: empty gRPC address")
	}
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "node"
		}
		c.Name = h
	}
	if strings.ContainsAny(c.Name, " \t\n") || len(c.Name) > 200 {
		return c, fmt.Errorf("cluster config: bad node name %q", c.Name)
	}
	if c.BindAddr == "" {
		c.BindAddr = DefaultHost(c.Security, c.Insecure)
	}
	gossip := []Listener{{Flag: "gossip bind", Addr: c.BindAddr, Gossip: true}, {Flag: "gossip advertise", Addr: c.AdvertiseAddr, Gossip: true}}
	if bad := unprotected(gossip, c.Security); len(bad) > 0 && !c.Insecure {
		return c, fmt.Errorf("cluster config: %s: gossip beyond loopback needs the cluster key (%s or --cluster-key-file), or --insecure", describe(bad), EnvKey)
	}
	if c.BindPort < 0 || c.BindPort > 65535 || c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		return c, fmt.Errorf("cluster config: gossip port out of range")
	}
	if c.MinNodes <= 0 {
		c.MinNodes = 1
	}
	if c.MaxNodes < 0 || (c.MaxNodes > 0 && c.MaxNodes < c.MinNodes) {
		return c, fmt.Errorf("cluster config: max nodes %d below min nodes %d", c.MaxNodes, c.MinNodes)
	}
	if c.JoinTimeout <= 0 {
		c.JoinTimeout = 2 * time.Minute
	}
	d := DefaultTiming()
	t := &c.Timing
	for _, f := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&t.ProbeInterval, d.ProbeInterval}, {&t.ProbeTimeout, d.ProbeTimeout},
		{&t.GossipInterval, d.GossipInterval}, {&t.PushPullInterval, d.PushPullInterval},
		{&t.DeadGossip, d.DeadGossip}, {&t.Reconcile, d.Reconcile}, {&t.RPCTimeout, d.RPCTimeout},
		{&t.Pending, d.Pending}, {&t.Penalty, d.Penalty}, {&t.Reconnect, d.Reconnect}, {&t.StallProbe, d.StallProbe},
		{&t.LeaveWait, d.LeaveWait}, {&t.JoinBackoff, d.JoinBackoff},
	} {
		if *f.v <= 0 {
			*f.v = f.def
		}
	}
	if t.SuspicionMult <= 0 {
		t.SuspicionMult = d.SuspicionMult
	}
	if t.Pending <= t.RPCTimeout {
		return c, fmt.Errorf("cluster config: pending timeout %s must exceed the RPC timeout %s", t.Pending, t.RPCTimeout)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Data = DataTag(c.Data)
	m := Meta{GRPCAddr: c.GRPCAddr, State: StateLeaving, Gen: 1<<64 - 1, Backend: c.Backend, Data: c.Data, Version: c.Version}
	if n := len(m.encode()); n > MaxMetaSize {
		return c, fmt.Errorf("cluster config: node metadata of %d bytes exceeds %d (shorten address, backend, data or version)", n, MaxMetaSize)
	}
	return c, nil
}

// uniqueName appends a random suffix to prefix.
func uniqueName(prefix string) (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("node name: %w", err)
	}
	return prefix + "-" + hex.EncodeToString(b[:]), nil
}

// DataTag is what a member announces for its dataset: empty for none, else
// "data-" and 8 hex digits of the sha256 of data (a directory or an id), so
// members with the same dataset show the same tag and no path leaves the
// node. A value that already is a tag is kept.
func DataTag(data string) string {
	if data == "" || (len(data) == 13 && strings.HasPrefix(data, "data-") && isHex(data[5:])) {
		return data
	}
	sum := sha256.Sum256([]byte(data))
	return "data-" + hex.EncodeToString(sum[:4])
}

func isHex(s string) bool {
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}
