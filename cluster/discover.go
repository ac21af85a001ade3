package cluster

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// observer is the gossip delegate of Discover: it announces a member that
// is only joining and has no gRPC address, so it is never put in a ring.
type observer struct{}

func (observer) NodeMeta(int) []byte                 { return Meta{State: StateJoining}.encode() }
func (observer) NotifyMsg([]byte)                    {}
func (observer) GetBroadcasts(int, int) [][]byte     { return nil }
func (observer) LocalState(bool) []byte              { return nil }
func (observer) MergeRemoteState(buf []byte, _ bool) {}

// table records members from memberlist events (see events for why).
type table struct {
	mu sync.Mutex
	m  map[string]MemberInfo
}

func (t *table) NotifyJoin(n *memberlist.Node)   { t.set(n) }
func (t *table) NotifyUpdate(n *memberlist.Node) { t.set(n) }
func (t *table) NotifyLeave(n *memberlist.Node) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, n.Name)
}
func (t *table) set(n *memberlist.Node) {
	info := nodeInfo(n)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[n.Name] = info
}

// Discover joins the gossip at seed (host:port of a gossip port) for a
// moment, as an observer that is never admitted to a ring, and returns the
// live members with their metadata. `trainer status --seed` uses it to find
// the gRPC addresses to query. It listens only on the local address that
// reaches the seed; beyond loopback that needs the cluster key, or
// insecure (see CheckExposure).
func Discover(ctx context.Context, seed string, sec *Security, insecure bool) ([]MemberInfo, error) {
	bind, err := localFor(ctx, seed)
	if err != nil {
		return nil, err
	}
	if err := CheckExposure([]Listener{{Flag: "status observer for seed " + seed, Addr: bind, Gossip: true}}, sec, insecure, nil); err != nil {
		return nil, err
	}
	name, err := uniqueName("status")
	if err != nil {
		return nil, err
	}
	cfg := memberlist.DefaultLANConfig()
	cfg.Name = name
	cfg.BindAddr = bind
	cfg.BindPort = 0
	cfg.AdvertisePort = 0
	cfg.Delegate = observer{}
	tab := &table{m: map[string]MemberInfo{}}
	cfg.Events = tab
	cfg.Logger = log.New(io.Discard, "", 0)
	if dl, ok := ctx.Deadline(); ok {
		cfg.TCPTimeout = max(time.Until(dl), time.Second)
	}
	if key := sec.GossipKey(); key != nil {
		if cfg.Keyring, err = memberlist.NewKeyring(nil, key); err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
	}
	ml, err := memberlist.Create(cfg)
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	defer ml.Shutdown()
	if _, err := ml.Join([]string{seed}); err != nil {
		if sec.GossipKey() == nil {
			return nil, fmt.Errorf("join %s: %w (a cluster with a key answers only members that hold it: set %s or --cluster-key-file)", seed, err, EnvKey)
		}
		return nil, fmt.Errorf("join %s: %w (is the cluster key the cluster's?)", seed, err)
	}
	defer ml.Leave(time.Second)
	tab.mu.Lock()
	defer tab.mu.Unlock()
	var out []MemberInfo
	for _, m := range tab.m {
		if m.Name != name && m.State.valid() {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b MemberInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// localFor returns the local IP address this machine uses to reach seed
// (host:port): loopback for a seed on this machine. Dialing UDP sends
// nothing; it only picks the route.
func localFor(ctx context.Context, seed string) (string, error) {
	host, port, err := net.SplitHostPort(seed)
	if err != nil {
		return "", fmt.Errorf("seed %q: %w", seed, err)
	}
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
	if err != nil {
		return "", fmt.Errorf("seed %q: %w", seed, err)
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("seed %q: %s has no address", seed, host)
	}
	if ips[0].IsLoopback() {
		return "127.0.0.1", nil
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", net.JoinHostPort(ips[0].String(), port))
	if err != nil {
		return "", fmt.Errorf("seed %q: no route: %w", seed, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}
