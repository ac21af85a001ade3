package cluster

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestMemberRules drives one member's Propose/Commit/Abort handlers
// directly through the promise rules.
func TestMemberRules(t *testing.T) {
	c, err := New(Config{Name: "m", BindAddr: "127.0.0.1", GRPCAddr: "127.0.0.1:1", Step: 7,
		Timing: FastTiming(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.shutdown()
	me := c.Name()
	ringWith := func(names ...string) []Member {
		r := ring(names...)
		for i := range r {
			r[i].Addr = "127.0.0.1:1"
		}
		sortMembers(r)
		return r
	}
	ctx := context.Background()
	propose := func(id, base uint64, r []Member) *ack {
		t.Helper()
		a, err := c.handlePropose(ctx, &proposal{ID: id, Base: base, Coordinator: "x", Ring: r})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	commitGen := func(id, base uint64, r []Member) *reply {
		return c.handleCommit(&commit{Gen: Generation{ID: id, Base: base, Coordinator: "x", Ring: r}})
	}
	expect := func(what string, ok bool, reason, want string) {
		t.Helper()
		if want == "" && !ok || want != "" && (ok || !strings.Contains(reason, want)) {
			t.Errorf("%s: ok=%v reason=%q, want %q", what, ok, reason, want)
		}
	}

	a := propose(5, 0, ringWith(me, "x"))
	expect("first proposal", a.OK, a.Reason, "")
	if a.Step != 7 {
		t.Errorf("ack step %d, want the configured resume step 7", a.Step)
	}
	a = propose(5, 0, ringWith(me, "x"))
	expect("same number again", a.OK, a.Reason, "already promised")
	a = propose(6, 0, ringWith("x", "y"))
	expect("ring without me", a.OK, a.Reason, "not in the proposed ring")

	r := commitGen(4, 0, ringWith(me, "x"))
	expect("commit of an unpromised number", r.OK, r.Reason, "not promised")
	r = commitGen(5, 0, ringWith(me, "x", "y"))
	expect("commit of another ring", r.OK, r.Reason, "differs")
	r = commitGen(5, 0, ringWith(me, "x"))
	expect("commit", r.OK, r.Reason, "")
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if g, err := c.WaitGeneration(wctx, 0); err != nil || g.ID != 5 {
		t.Fatalf("after commit: %v, %v", g, err)
	}
	r = commitGen(5, 0, ringWith(me, "x"))
	expect("commit again", r.OK, r.Reason, "stale")

	a = propose(6, 3, ringWith(me, "x"))
	expect("stale base", a.OK, a.Reason, "latest is 5")
	if a.Cur.ID != 5 {
		t.Errorf("refusal carries generation %d, want 5", a.Cur.ID)
	}

	// A promise blocks the node until commit or abort.
	a = propose(7, 5, ringWith(me, "x"))
	expect("proposal on the current base", a.OK, a.Reason, "")
	actx, acancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer acancel()
	if _, err := c.AtStep(actx, 7); err == nil {
		t.Fatal("AtStep ran a step while a proposal was pending")
	}
	if rep := c.handleAbort(&abort{ID: 6}); rep.OK {
		t.Error("abort of another proposal accepted")
	}
	if rep := c.handleAbort(&abort{ID: 7}); !rep.OK {
		t.Errorf("abort refused: %s", rep.Reason)
	}
	if g, err := c.AtStep(ctx, 7); err != nil || g.ID != 5 {
		t.Fatalf("after abort: %v, %v", g, err)
	}
	// The promise survives the abort: a lower number never commits.
	r = commitGen(6, 5, ringWith(me, "x"))
	expect("commit below the promise", r.OK, r.Reason, "not promised")
}
