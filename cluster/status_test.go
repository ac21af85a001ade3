package cluster

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestStatusThroughSeed does what `trainer status --seed` does: discover the
// members through the gossip as an observer, then query their status. The
// observer must not disturb the ring.
func TestStatusThroughSeed(t *testing.T) {
	sec := mustSecurity(t, "the-cluster-secret-0123")
	h := newHarness(t, sec)
	nodes := []*testNode{h.start("st", nil), h.start("st", nil)}
	g := agree(t, settle, nodes...)
	nodes[1].c.SetStatus(StatusInfo{Step: 42, Loss: 2.5, TokensPerSec: 1000})
	// Wait until the seed has heard every member's new metadata.
	for deadline := time.Now().Add(settle); ; time.Sleep(20 * time.Millisecond) {
		ok := true
		for _, m := range nodes[0].c.Members() {
			ok = ok && m.Gen == g.ID
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metadata not gossiped: %+v", nodes[0].c.Members())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Discover(ctx, nodes[0].c.GossipAddr(), nil, false); err == nil {
		t.Error("discovery without the secret succeeded")
	}
	ms, err := Discover(ctx, nodes[0].c.GossipAddr(), sec, false)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range ms {
		names = append(names, m.Name)
		if m.GRPCAddr == "" || m.State != StateTraining || m.Gen != g.ID {
			t.Errorf("member %+v: want training in generation %d with a gRPC address", m, g.ID)
		}
	}
	if !slices.Equal(names, g.Names()) {
		t.Fatalf("discovered %v, want %v", names, g.Names())
	}
	for _, n := range nodes {
		s, err := QueryStatus(ctx, n.c.cfg.GRPCAddr, sec)
		if err != nil {
			t.Fatal(err)
		}
		if s.Self != n.c.Name() || s.Gen.ID != g.ID || len(s.Members) < 2 {
			t.Errorf("status of %s: %+v", n.c.Name(), s)
		}
		if n == nodes[1] && (s.Info.Step != 42 || s.Info.Loss != 2.5 || s.Info.TokensPerSec != 1000 || s.Info.Updated.IsZero()) {
			t.Errorf("status info: %+v", s.Info)
		}
	}
	// The observer left and no generation changed.
	time.Sleep(500 * time.Millisecond)
	if got := agree(t, settle, nodes...); got.ID != g.ID {
		t.Errorf("the observer caused generation %v", got)
	}
	if n := len(nodes[0].c.Members()); n != 2 {
		t.Errorf("%d members after the observer left", n)
	}
}
