package cluster

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// newMemberlist builds the gossip layer for c from its config.
func (c *Cluster) newMemberlist() (*memberlist.Memberlist, error) {
	cfg := c.cfg
	logger := log.New(slogWriter{c.log}, "", 0)
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{cfg.BindAddr},
		BindPort:  cfg.BindPort,
		Logger:    logger,
	})
	if err != nil {
		return nil, fmt.Errorf("gossip listen on %s: %w", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	port := nt.GetAutoBindPort()
	var tr memberlist.NodeAwareTransport = nt
	if cfg.WrapTransport != nil {
		tr = cfg.WrapTransport(nt)
	}

	ml := memberlist.DefaultLANConfig()
	ml.Name = c.name
	ml.Transport = tr
	ml.BindAddr = cfg.BindAddr
	ml.BindPort = port
	ml.AdvertiseAddr = cfg.AdvertiseAddr
	ml.AdvertisePort = cfg.AdvertisePort
	if ml.AdvertisePort == 0 {
		ml.AdvertisePort = port
	}
	t := cfg.Timing
	ml.ProbeInterval = t.ProbeInterval
	ml.ProbeTimeout = t.ProbeTimeout
	ml.GossipInterval = t.GossipInterval
	ml.PushPullInterval = t.PushPullInterval
	ml.SuspicionMult = t.SuspicionMult
	ml.GossipToTheDeadTime = t.DeadGossip
	ml.TCPTimeout = t.RPCTimeout
	ml.Delegate = delegate{c}
	ml.Events = events{c}
	ml.Logger = logger
	if key := cfg.Security.GossipKey(); key != nil {
		kr, err := memberlist.NewKeyring(nil, key)
		if err != nil {
			nt.Shutdown()
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		ml.Keyring = kr
		ml.GossipVerifyIncoming = true
		ml.GossipVerifyOutgoing = true
	}
	m, err := memberlist.Create(ml)
	if err != nil {
		nt.Shutdown()
		return nil, fmt.Errorf("gossip: %w", err)
	}
	return m, nil
}

// delegate gives memberlist this member's metadata. The cluster carries no
// user messages or state of its own in the gossip.
type delegate struct{ c *Cluster }

func (d delegate) NodeMeta(limit int) []byte {
	b := d.c.meta().encode()
	if len(b) > limit {
		// withDefaults checked the size; this cannot happen.
		d.c.log.Error("node metadata too large", "bytes", len(b), "limit", limit)
		return nil
	}
	return b
}
func (delegate) NotifyMsg([]byte)                    {}
func (delegate) GetBroadcasts(int, int) [][]byte     { return nil }
func (delegate) LocalState(bool) []byte              { return nil }
func (delegate) MergeRemoteState(buf []byte, _ bool) {}

// events keeps the member table and turns membership changes into
// coordinator work. memberlist calls these with its own locks held, so they
// copy what they need and never call back into it. (The *Node that
// memberlist.Members returns is updated in place by memberlist, so reading
// it later would race; the table is the only view the package uses.)
type events struct{ c *Cluster }

func (e events) NotifyJoin(n *memberlist.Node) {
	info := nodeInfo(n)
	e.c.mu.Lock()
	delete(e.c.lost, n.Name)
	e.c.peers[n.Name] = info
	if info.State.gone() {
		e.c.left[n.Name] = true
	}
	e.c.noteLocked(info)
	e.c.mu.Unlock()
	e.c.log.Debug("member joined", "member", n.Name, "addr", info.Gossip)
	e.c.wake()
}

func (e events) NotifyLeave(n *memberlist.Node) {
	info := nodeInfo(n)
	e.c.mu.Lock()
	delete(e.c.peers, n.Name)
	e.c.noteLocked(info)
	if info.State.gone() {
		e.c.left[n.Name] = true
	} else if n.Name != e.c.name {
		// Not a graceful leave: remember the address to heal a partition.
		e.c.lost[n.Name] = lostPeer{addr: info.Gossip, since: time.Now()}
	}
	e.c.mu.Unlock()
	e.c.log.Info("member gone", "member", n.Name, "addr", info.Gossip)
	e.c.wake()
}

func (e events) NotifyUpdate(n *memberlist.Node) {
	info := nodeInfo(n)
	e.c.mu.Lock()
	e.c.peers[n.Name] = info
	if info.State.gone() {
		e.c.left[n.Name] = true
	}
	e.c.noteLocked(info)
	e.c.mu.Unlock()
	e.c.wake()
}

// nodeInfo copies what the package needs from a memberlist node. Metadata
// that does not decode leaves State zero, which nothing treats as eligible.
func nodeInfo(n *memberlist.Node) MemberInfo {
	info := MemberInfo{Name: n.Name, Gossip: n.Address()}
	if meta, err := decodeMeta(n.Meta); err == nil {
		info.Meta = meta
	}
	return info
}

// slogWriter forwards memberlist's log lines ("[WARN] memberlist: ...") to
// slog at the matching level.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, l := range []struct {
		tag string
		lv  slog.Level
	}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelWarn}, {"[ERROR]", slog.LevelWarn}} {
		if bytes.HasPrefix(msg, []byte(l.tag)) {
			level = l.lv
			msg = bytes.TrimSpace(msg[len(l.tag):])
			break
		}
	}
	if bytes.Contains(msg, []byte("use of closed network connection")) {
		level = slog.LevelDebug // gossip still in flight as this member shuts down
	}
	w.log.Log(context.Background(), level, string(msg), "component", "gossip")
	return len(p), nil
}
